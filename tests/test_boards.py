"""Tests of the board registry, the measurement harness and the bitstream build flow.

Fast tests use small files in tests/data/boards/, produced once by real builds of
`StreamAdder` (nextpnr reports with their `critical_paths` list removed, as it is not
parsed) and by a build of 12 multipliers on a UP5K with the netlist fit check bypassed.
Tests marked `build` run Yosys and nextpnr (a few seconds each once the YoWASP tools are
compiled; the very first call of each tool takes about 30 s more).
"""

import json
import time
from pathlib import Path

import pytest
from amaranth import Const, Instance, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out
from amaranth.sim import Simulator

from oscarray.boards import build as flow
from oscarray.boards.build import (BOARDS, BuildFailed, DesignDoesNotFit, UnknownBoard,
                                   check_nextpnr_fit, get_board, parse_nextpnr_report,
                                   parse_yosys_stat)
from oscarray.boards.harness import (Harness, IdentityCore, _ca_rules, _ca_seed, port_bits,
                                     port_shape_key)

DATA = Path(__file__).parent / "data" / "boards"


def unelaborated(component):
    """`component`, marked so that amaranth does not warn that it is never elaborated."""
    component._MustUse__silence = True
    return component


class StreamAdder(wiring.Component):
    """Registered 16-bit adder: payload = two 16-bit operands (a low, b high) in, a + b out.

    Operands and sum are registered (latency 2); it never stalls (`i.ready` is 1) and
    ignores `o.ready`, which keeps the critical path the bare 16-bit carry chain.
    50 flip-flops: 2 x 16 operand bits, 16 sum bits, 2 valid bits.
    """
    i: In(stream.Signature(32))
    o: Out(stream.Signature(16))

    def elaborate(self, platform):
        m = Module()
        a, b, valid = Signal(16), Signal(16), Signal()
        m.d.comb += self.i.ready.eq(1)
        m.d.sync += [a.eq(self.i.payload[:16]), b.eq(self.i.payload[16:]),
                     valid.eq(self.i.valid),
                     self.o.payload.eq(a + b), self.o.valid.eq(valid)]
        return m


class ManyMultipliers(wiring.Component):
    """`n` registered 16 x 16 multipliers whose products are XORed: n SB_MAC16 on iCE40."""
    i: In(stream.Signature(32))
    o: Out(stream.Signature(32))

    def __init__(self, n=12):
        self.n = n
        super().__init__()

    def elaborate(self, platform):
        m = Module()
        acc = Const(0, 32)
        for k in range(self.n):
            a, b, p = Signal(16), Signal(16), Signal(32)
            # Different operands per multiplier so that synthesis cannot share them.
            m.d.sync += [a.eq(self.i.payload[:16] ^ k), b.eq(self.i.payload[16:] + k),
                         p.eq(a * b)]
            acc = acc ^ p
        m.d.comb += [self.i.ready.eq(1), self.o.valid.eq(self.i.valid)]
        m.d.sync += self.o.payload.eq(acc)
        return m


class UnknownCell(wiring.Component):
    """Instantiates a cell no library has: synthesis fails (not a fit problem)."""
    i: In(stream.Signature(8))
    o: Out(stream.Signature(8))

    def elaborate(self, platform):
        m = Module()
        m.submodules.x = Instance("NO_SUCH_CELL", i_A=self.i.payload, o_Y=self.o.payload)
        return m


class SinkOnly(wiring.Component):
    """Only inputs (a stream sink would still have `ready` as an output)."""
    a: In(8)

    def elaborate(self, platform):
        return Module()


# --- Board registry --------------------------------------------------------------------------

def test_registry_has_the_three_boards():
    assert set(BOARDS) == {"icebreaker", "ulx3s-85f", "orangecrab-25f"}
    expected = {"icebreaker": ("ice40", "iCE40UP5K", 5280, 8, 30),
                "ulx3s-85f": ("ecp5", "LFE5U-85F", 83640, 156, 208),
                "orangecrab-25f": ("ecp5", "LFE5U-25F", 24288, 28, 56)}
    for name, (family, device, lut, dsp, bram) in expected.items():
        board = get_board(name)
        assert (board.family, board.device) == (family, device)
        assert (board.capacity.lut, board.capacity.dsp, board.capacity.bram) == (lut, dsp, bram)
        assert board.platform.device == device  # the amaranth-boards class is the right part


def test_icebreaker_synthesis_uses_dsps():
    assert "-dsp" in get_board("icebreaker").synth_opts


def test_icebreaker_script_maps_dsps_with_its_own_minimum_width():
    """The iCE40 Yosys script: synth_ice40 up to `coarse`, our coarse section (mul2dsp with
    the board's minimum slice width, NO_COLLISION_ATTR memories relaxed), synth_ice40 from
    `map_ram`; the ECP5 boards' script is amaranth's own (synth_ecp5, no DSP step of ours)."""
    from oscarray.hdl.attention import NO_COLLISION_ATTR
    board = get_board("icebreaker")
    assert board.dsp_min_width == flow.DSP_MIN_WIDTH >= 5 and board.x_on_collision
    script = flow.synth_commands("icebreaker", "top")
    assert script["synth_opts"] == "-spram -run begin:coarse"
    lines = script["script_after_synth"].splitlines()
    mul2dsp = [line for line in lines if "mul2dsp.v" in line]
    assert len(mul2dsp) == 1
    width = flow.DSP_MIN_WIDTH
    assert f"-D DSP_A_MINWIDTH={width} -D DSP_B_MINWIDTH={width}" in mul2dsp[0]
    assert "ice40/dsp_map.v" in mul2dsp[0] and "DSP_NAME=$__MUL16X16" in mul2dsp[0]
    assert lines.index(mul2dsp[0]) < lines.index("ice40_dsp")
    assert lines[-2] == (f"setparam -set RD_COLLISION_X_MASK 1'1 t:$mem_v2 "
                         f"a:{NO_COLLISION_ATTR}=1 %i")
    assert lines[-1] == "synth_ice40 -spram -top top -run map_ram:"
    assert script["script_after_read"] == flow._DROP_NO_INIT
    for ecp5 in ("ulx3s-85f", "orangecrab-25f"):
        assert flow.synth_commands(ecp5, "top") == {
            "script_after_read": flow._DROP_NO_INIT, "synth_opts": "",
            "script_after_synth": ""}
    with pytest.raises(ValueError):
        flow.ice40_coarse_script(1)


def test_our_coarse_section_is_synth_ice40s():
    """ice40_coarse_script at synth_ice40's widths (2) is, command for command, the `coarse`
    section `help synth_ice40` prints for "-dsp" (a Yosys update that changes it fails here)."""
    import subprocess
    yosys = flow._tool_env()["YOSYS"]
    text = subprocess.run([yosys, "-p", "help synth_ice40"], capture_output=True,
                          text=True, check=True).stdout
    section = text.split("    coarse:")[1].split("    map_ram:")[0]
    commands = []
    for line in section.splitlines():
        line = line.strip()
        if not line:
            continue
        command = line.split("  (if ")[0].strip()       # "(if -dsp)": we give -dsp
        commands.append(command.replace(" [-no-rw-check]", ""))
    assert flow.ice40_coarse_script(2).splitlines() == commands


def test_unknown_board_lists_valid_names():
    with pytest.raises(UnknownBoard) as info:
        get_board("de10-nano")
    message = str(info.value)
    assert "de10-nano" in message
    for name in BOARDS:
        assert name in message


def test_unknown_board_fails_before_any_work(tmp_path):
    def factory():
        raise AssertionError("the core must not be built for an unknown board")
    with pytest.raises(UnknownBoard):
        flow.build(factory, "nope", build_dir=tmp_path / "b", target_mhz=50)
    assert not (tmp_path / "b").exists()


# --- Parsing tool output ---------------------------------------------------------------------

def test_parse_nextpnr_report_ice40():
    parsed = parse_nextpnr_report(DATA / "nextpnr_report_ice40.json", "ice40", 100)
    assert parsed["lut"] == 111 and parsed["dsp"] == 0 and parsed["bram"] == 0
    assert parsed["available"] == {"lut": 5280, "dsp": 8, "bram": 30}
    assert parsed["fmax_mhz"] == pytest.approx(102.459, abs=1e-3)
    assert parsed["clock"] == "clk"


def test_parse_nextpnr_report_ecp5():
    parsed = parse_nextpnr_report(DATA / "nextpnr_report_ecp5.json", "ecp5", 300)
    assert parsed["lut"] == 73 and parsed["ff"] == 105
    assert parsed["available"]["lut"] == 83640 and parsed["available"]["dsp"] == 156
    assert parsed["available"]["bram"] == 208
    # The constraint is stored as 300.03 MHz (a period rounded to ps): still "our" clock.
    assert parsed["fmax_mhz"] == pytest.approx(324.781, abs=1e-3)


def test_parse_nextpnr_report_picks_the_constrained_clock():
    report = {"utilization": {}, "fmax": {
        "other": {"achieved": 50.0, "constraint": 12.0},
        "core": {"achieved": 180.0, "constraint": 150.0}}}
    assert parse_nextpnr_report(report, "ice40", 150)["clock"] == "core"
    assert parse_nextpnr_report(report, "ice40", None)["clock"] == "other"  # the slowest
    assert parse_nextpnr_report({"utilization": {}}, "ecp5")["fmax_mhz"] == 0.0


def test_parse_yosys_stat_and_netlist_estimate():
    ice40 = parse_yosys_stat(DATA / "yosys_stat_ice40.json")
    assert ice40["SB_LUT4"] > 0 and ice40["SB_CARRY"] > 0
    usage = flow._netlist_usage("ice40", ice40)
    assert usage["ff"] == 105 and usage["lut"] >= usage["ff"]
    ecp5 = flow._netlist_usage("ecp5", parse_yosys_stat(DATA / "yosys_stat_ecp5.json"))
    assert ecp5 == {"lut": 51 + 2 * 8, "ff": 105, "dsp": 0, "bram": 0}


def test_nextpnr_overfull_device_is_design_does_not_fit():
    with pytest.raises(DesignDoesNotFit) as info:
        check_nextpnr_fit("icebreaker", DATA / "nextpnr_nofit_ice40.log")
    error = info.value
    assert (error.needed, error.available) == (12, 8)
    assert "SB_MAC16" in str(error) and "icebreaker" in str(error)
    assert str(DATA / "nextpnr_nofit_ice40.log") in str(error)


def test_netlist_fit_check_reports_numbers():
    usage = {"lut": 100, "ff": 100, "dsp": 9, "bram": 0}
    with pytest.raises(DesignDoesNotFit, match=r"at least 9 SB_MAC16 DSPs, the device has 8"):
        flow._check_netlist_fit(get_board("icebreaker"), usage, "x.rpt")


# --- Harness ---------------------------------------------------------------------------------

def test_port_bits_follow_stream_directions():
    adder = unelaborated(StreamAdder())
    inputs, outputs = port_bits(adder)
    assert [p for p, _ in inputs] == ["i.payload", "i.valid", "o.ready"]
    assert [p for p, _ in outputs] == ["i.ready", "o.payload", "o.valid"]
    identity = unelaborated(IdentityCore(adder.signature))
    assert port_shape_key(adder) == port_shape_key(identity)
    assert port_shape_key(adder) != port_shape_key(unelaborated(ManyMultipliers()))


@pytest.mark.parametrize("n", range(1, 70))
def test_input_automaton_is_invertible(n):
    """An invertible update never reaches the all-zero state from the nonzero seed."""
    rules = _ca_rules(n)
    rows = []  # row k of the update matrix over GF(2), as an int bit mask
    for k in range(n):
        mask = (1 << k) if rules[k] else 0
        mask |= (1 << (k - 1)) if k > 0 else 0
        mask |= (1 << (k + 1)) if k < n - 1 else 0
        rows.append(mask)
    rank, pivots = 0, []
    for row in rows:  # Gaussian elimination
        for pivot in pivots:
            row = min(row, row ^ pivot)
        if row:
            pivots.append(row)
            rank += 1
    assert rank == n
    assert _ca_seed(n) != 0


def test_harness_drives_every_input_and_observes_outputs():
    """In simulation every input bit of the core takes both values within 64 cycles."""
    core = IdentityCore(StreamAdder().signature)
    top = Harness(core)
    inputs, _ = port_bits(core)
    seen_one, seen_zero = {}, {}

    async def bench(ctx):
        for _ in range(64):
            await ctx.tick()
            for path, value in inputs:
                bits = ctx.get(value)
                seen_one[path] = seen_one.get(path, 0) | bits
                seen_zero[path] = seen_zero.get(path, 0) | (~bits & ((1 << len(value)) - 1))

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    for path, value in inputs:
        full = (1 << len(value)) - 1
        assert seen_one[path] == full and seen_zero[path] == full, path


def test_harness_needs_an_output():
    core = unelaborated(SinkOnly())
    with pytest.raises(ValueError, match="no output port"):
        Harness(core)


# --- Real builds -----------------------------------------------------------------------------

@pytest.mark.build
@pytest.mark.parametrize("board, target_mhz", [("icebreaker", 100.0), ("ulx3s-85f", 300.0)])
def test_build_stream_adder(tmp_path, board, target_mhz):
    messages = []
    result = flow.build(StreamAdder, board, build_dir=tmp_path, target_mhz=target_mhz,
                        progress=messages.append)
    bitstream = Path(result["bitstream"])
    assert bitstream.is_file() and bitstream.stat().st_size > 0
    assert result["board"] == board and result["device"] == get_board(board).device
    assert result["lut"] > 0 and result["fmax_mhz"] > 0
    assert result["timing_met"] == (result["fmax_mhz"] >= target_mhz)
    assert result["target_mhz"] == target_mhz
    # The harness is subtracted exactly for flip-flops: 50 is the adder's own count.
    assert result["core_ff"] == 50
    assert 0 < result["core_lut"] < result["lut"]
    assert result["harness_lut"] + result["core_lut"] == result["lut"]
    for step in ("synthesis", "place and route", "packing", "harness-only"):
        assert any(step in message for message in messages), step
    # The harness-only figures are cached per (board, port shape): no second harness build.
    again = []
    flow.build(StreamAdder, board, build_dir=tmp_path, target_mhz=target_mhz, name="again",
               progress=again.append)
    assert not any("harness-only" in message for message in again)
    assert json.loads((tmp_path / "harness_cache.json").read_text())


@pytest.mark.build
def test_too_many_multipliers_do_not_fit_icebreaker(tmp_path):
    start = time.monotonic()
    with pytest.raises(DesignDoesNotFit) as info:
        flow.build(ManyMultipliers, "icebreaker", build_dir=tmp_path, target_mhz=50)
    assert time.monotonic() - start < 60  # caught after synthesis, before place and route
    error = info.value
    assert (error.needed, error.available) == (12, 8)
    assert "icebreaker" in str(error) and "SB_MAC16" in str(error)
    assert Path(error.log_path).is_file()


@pytest.mark.build
def test_tool_failure_is_build_failed(tmp_path):
    with pytest.raises(BuildFailed) as info:
        flow.build(UnknownCell, "ulx3s-85f", build_dir=tmp_path, target_mhz=50)
    error = info.value
    assert error.step == "synthesis"
    assert "NO_SUCH_CELL" in error.log_tail
    assert Path(error.log_path).is_file()
