"""The deterministic simulation: many seeds of faults, then the invariants."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from leptos_sync import sim
from leptos_sync.sim import SimConfig, Simulation, SimulationFailure, run_seed

# CI runs 200 seeds; LEPTOS_SYNC_SIM_SEEDS asks for a larger run.
SEEDS = int(os.environ.get("LEPTOS_SYNC_SIM_SEEDS", "200"))
CHUNK = 10


@pytest.mark.parametrize("start", range(0, SEEDS, CHUNK))
def test_seeds_converge_with_nothing_lost_or_applied_twice(start: int) -> None:
    """Every seed heals to identical replicas equal to the hub's state, with every
    operation in the hub log once, empty outboxes and exact counters."""
    for seed in range(start, min(start + CHUNK, SEEDS)):
        report = run_seed(seed)
        assert report.local_ops > 0
        assert report.frames_delivered > 0


def test_a_seed_replays_exactly() -> None:
    """The same seed gives the same run: same faults, same final state."""
    first, second = run_seed(12), run_seed(12)
    assert first == second
    assert first.digest != 0


def test_every_store_combination_and_more_replicas_converge(tmp_path: Path) -> None:
    """Memory and SQLite stores for hub and replicas, with five replicas."""
    for hub in ("memory", "sqlite"):
        for replica in ("memory", "sqlite"):
            report = Simulation(
                SimConfig(
                    seed=7,
                    replicas=5,
                    steps=300,
                    hub_store=hub,  # type: ignore[arg-type]
                    replica_store=replica,  # type: ignore[arg-type]
                    directory=tmp_path / f"{hub}-{replica}",
                )
            ).run()
            assert (report.hub_store, report.replica_store) == (hub, replica)


def test_faults_actually_happen_across_seeds() -> None:
    """The scheduler exercises every fault kind somewhere in a few seeds."""
    totals: dict[str, int] = {}
    for seed in range(12):
        report = run_seed(seed)
        for key, value in vars(report).items():
            if isinstance(value, int):
                totals[key] = totals.get(key, 0) + value
    for key in (
        "frames_dropped",
        "frames_duplicated",
        "frames_reordered",
        "frames_corrupted",
        "disconnects",
        "hub_restarts",
        "replica_restarts",
        "snapshots_sent",
    ):
        assert totals[key] > 0, key


def test_a_failing_seed_names_itself_and_the_replay_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A broken invariant raises an AssertionError naming the seed and the
    command that replays it."""
    real = sim._Ledger.record

    def record_a_phantom(self: sim._Ledger, replica: int, *args: object) -> None:
        real(self, replica, *args)  # type: ignore[arg-type]
        self.ops[(replica, 10**9)] = ("notes", 0)  # an op the hub never saw

    monkeypatch.setattr(sim._Ledger, "record", record_a_phantom)
    with pytest.raises(AssertionError) as caught:
        run_seed(3, steps=40)
    message = str(caught.value)
    assert isinstance(caught.value, SimulationFailure)
    assert "seed 3" in message
    assert "python -m leptos_sync.sim --seed 3 --steps 40" in message
    assert "never reached the hub" in message


def test_command_line_runs_seeds_and_reports(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`python -m leptos_sync.sim` runs a range of seeds, or one with a report."""
    assert sim.main(["--seeds", "3", "--start", "40", "--steps", "80"]) == 0
    assert "3 seeds, 0 failed" in capsys.readouterr().out
    assert sim.main(["--seed", "5", "--steps", "60", "--replicas", "2"]) == 0
    out = capsys.readouterr().out
    assert "SimReport(seed=5" in out and "1 seeds, 0 failed" in out
