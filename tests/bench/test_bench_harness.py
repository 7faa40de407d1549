"""The benchmark harness keeps working: tiny runs produce figures and a record.

Never asserts on speed (the figures of a shared 2-core machine drift); only that each benchmark
ran the gateway as real processes and measured something beside its ceiling.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from bench.benchmarks import Context, Sizes, bench_callbacks, bench_campaign, bench_e2e

from bench import run

TINY = Sizes(single_seconds=0.5, campaign=200, e2e=200, raw_echo=200, e2e_latency=200,
             callbacks=50)

pytestmark = pytest.mark.slow


def test_run_command_prints_and_records_campaign_and_get_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = tmp_path / "benchmarks.md"
    code = run.main(["--quick", "--db", "sqlite", "--only", "campaign,get_message",
                     "--record", str(record)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| campaign | sqlite |" in printed and "| get_message | sqlite |" in printed
    text = record.read_text()
    assert text.startswith("# Benchmarks") and "## Runs" in text
    assert "commit " in text and "cores" in text


def test_campaign_figures_stand_beside_the_bulk_write_ceiling(tmp_path: Path) -> None:
    figures = bench_campaign(Context("sqlite", TINY, tmp_path), write=True, read=True)
    campaign = figures[0]
    assert campaign.bench == "campaign" and campaign.value > 0
    assert campaign.ceiling is not None and campaign.ratio is not None
    assert {"campaign", "get_message"} <= {f.bench for f in figures}


def test_end_to_end_over_smpp_measures_parts_and_the_raw_echo_rate(tmp_path: Path) -> None:
    (figure,) = bench_e2e(Context("sqlite", TINY, tmp_path))
    assert figure.value > 0 and figure.ceiling and figure.ceiling > 0
    assert "still not final" not in figure.note


def test_callbacks_are_counted_by_the_receiver(tmp_path: Path) -> None:
    (figure,) = bench_callbacks(Context("sqlite", TINY, tmp_path))
    assert figure.value > 0 and figure.ceiling and figure.ceiling > 0


def test_only_rejects_an_unknown_benchmark() -> None:
    with pytest.raises(SystemExit):
        run.selected(["nope"])


def test_sustained_reports_every_figure_of_a_step_beside_the_generator_ceiling(
    tmp_path: Path,
) -> None:
    """A tiny sustained run on SQLite: the generators against bare_app.py, then `serve`
    delivering to the simulator at one open-loop rate and closed loop."""
    from bench import sustained

    if shutil.which(sustained.WRK) is None:  # Debian's wrk: .ci/run installs it
        pytest.skip("wrk is not installed (apt-get install wrk)")

    ladder = sustained.Ladder((50,), 1.0)
    ceiling = sustained.generator_ceiling(ladder, lambda n: tmp_path / f"{n}.log")
    assert [s.load for s in ceiling] == ["open 50/s", "closed 64"]
    assert all(s.accepted > 0 and s.p99_ms > 0 for s in ceiling)
    with sustained.tikosms_gateway("sqlite", tmp_path, lambda n: tmp_path / f"{n}.log") as gw:
        steps = sustained.run_ladder(gw, ladder, log=lambda line: None)
    assert [s.load for s in steps] == ["open 50/s", "closed 64"]
    for step in steps:
        assert step.accepted > 0 and step.p50_ms > 0 and step.p99_ms >= step.p50_ms
        assert step.submitted is not None and step.receipts is not None
        assert step.queue_end is not None and step.drained_s is not None
        assert step.submit_p99_ms is not None and step.submit_p99_ms != float("inf")
        assert {"serve", "simulator", "generator"} <= set(step.cpu_ms)
        assert step.cpu_ms["serve"] > 0
    table = sustained.steps_table(ceiling + steps)
    assert table.count("\n") == len(ceiling + steps) + 1
    assert "serve, SQLite" in table and "generator alone" in table


def test_sustained_judges_the_cpu_target_at_the_rate_it_goes_with() -> None:
    """"At least 3,000/s ... about 0.6 ms of CPU per message": the CPU target is judged at the
    highest rate kept up with, where the processes' fixed costs no longer weigh, not at
    1,000/s; the 1,000/s figure stays, with no target."""
    from bench.benchmarks import Figure

    from bench import sustained

    def step(setup: str, variant: str, rate: int, cpu: dict[str, float]) -> sustained.Step:
        return sustained.Step(setup, variant, f"open {rate:,}/s", rate, 10.0, accepted=rate,
                              submitted=rate, queue_end=0, p50_ms=5.0, p99_ms=20.0,
                              submit_p99_ms=50.0, cpu_ms=cpu)

    steps = [step("api alone, PostgreSQL (ceiling)", "-", r, {"API": 0.2, "generator": 0.1})
             for r in (1000, 3000)]
    steps += [step("api + worker, PostgreSQL", "receipts", 1000,
                   {"API": 0.5, "worker": 0.3, "PostgreSQL": 0.3, "generator": 0.1}),
              step("api + worker, PostgreSQL", "receipts", 3000,
                   {"API": 0.2, "worker": 0.15, "PostgreSQL": 0.2, "generator": 0.1,
                    "receiver": 0.2})]
    figures = {f.figure: f for f in sustained.figures_of("postgresql", steps, Figure)}
    at_1000 = figures["open 1,000/s: CPU ms per message, all processes"]
    assert at_1000.value == pytest.approx(1.1) and at_1000.met is None
    top = figures["open 3,000/s (the highest kept up with): CPU ms per message, all processes"]
    assert top.value == pytest.approx(0.55)  # neither the generator nor the receiver
    assert top.met is True and top.ceiling == pytest.approx(0.2)
    steps[-1].cpu_ms["worker"] = 0.3
    figures = {f.figure: f for f in sustained.figures_of("postgresql", steps, Figure)}
    assert figures["open 3,000/s (the highest kept up with): CPU ms per message, "
                   "all processes"].met is False


def test_open_loop_generator_merges_processes_into_one_schedule() -> None:
    from bench import openloop

    a = {"offered_rate": 100, "scheduled": 50, "started": 10.0, "ended": 11.0, "duration": 1.0,
         "connections": 2, "statuses": {"200": 50}, "errors": {},
         "latency_ms": {"1.0": 50}}
    b = {**a, "statuses": {"200": 49, "503": 1}, "latency_ms": {"2.0": 49, "30.0": 1}}
    merged = openloop.merge([a, b])
    assert merged["scheduled"] == 100 and merged["ok"] == 99
    assert merged["p50_ms"] == 1.0 and merged["p99_ms"] == 2.0 and merged["max_ms"] == 30.0


def test_fleet_takes_worker_counts_and_refuses_a_count_of_none() -> None:
    from bench import fleet

    args = fleet.parse_args(["--parts", "500", "--workers", "1,3", "--apis", "2"])
    assert args.worker_counts == [1, 3] and args.parts == 500 and args.apis == 2
    with pytest.raises(SystemExit):
        fleet.parse_args(["--workers", "0"])


def test_fleet_table_names_each_process_and_the_ceiling() -> None:
    from bench import fleet

    row = fleet.Row(2, 1, 1000, handed_per_s=900.0, receipts_per_s=850.0, seconds=2.5,
                    finished=True, cpu_ms={"worker 1": 0.5, "worker 2": 0.4})
    table = fleet.render([row], 6000.0)
    assert "| 2 | 1 | 1,000 | 900 | 850 | 6,000 | 2.5 | worker 1 0.50, worker 2 0.40 |" in table
