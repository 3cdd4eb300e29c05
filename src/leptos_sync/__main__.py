"""``python -m leptos_sync`` is the ``leptos-sync`` command."""

from .cli import main

if __name__ == "__main__":
    main()
