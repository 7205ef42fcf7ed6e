"""Board top levels (boards/top.py): PLL dividers, engine ids, elaboration for each board's
platform (amaranth's build plan, no tool run), the refusals, the single-port output FIFO; and
real ULX3S and iCEBreaker builds (slow, build)."""

import dataclasses

import numpy as np
import pytest
from amaranth.sim import Simulator

from oscarray.boards import top as tops
from oscarray.boards.build import DesignDoesNotFit, UnknownBoard
from oscarray.boards.top import (ENGINE_LOOPBACK, ENGINE_SOFTMAX, TOPS, AttentionTop,
                                 BoardTopError, LinkTop, SinglePortFifo, decode_engine_id,
                                 elaborate_top, encode_engine_id, pll_ecp5, pll_ice40,
                                 spec_for_head, top_for)


def unused(top):
    """A top made for its parameters only (no "created but never used" warning)."""
    top._MustUse__silence = True
    return top


@pytest.mark.parametrize("fin, fout", [(25e6, 30e6), (48e6, 32e6), (25e6, 50e6),
                                       (48e6, 24e6), (25e6, 125e6)])
def test_ecp5_pll_dividers(fin, fout):
    p = pll_ecp5(fin, fout)
    pfd = fin / p["clki_div"]
    assert 3.125e6 <= pfd <= 400e6
    assert p["fout_hz"] == pytest.approx(pfd * p["clkfb_div"])
    assert 400e6 <= p["fout_hz"] * p["clkop_div"] <= 800e6
    assert abs(p["fout_hz"] - fout) <= 0.005 * fout


@pytest.mark.parametrize("fin, fout", [(12e6, 24e6), (12e6, 36e6), (12e6, 48e6),
                                       (12e6, 16.5e6)])
def test_ice40_pll_dividers(fin, fout):
    p = pll_ice40(fin, fout)
    pfd = fin / (p["divr"] + 1)
    vco = pfd * (p["divf"] + 1)
    assert 10e6 <= pfd <= 133e6 and 533e6 <= vco <= 1066e6
    assert p["fout_hz"] == pytest.approx(vco / 2 ** p["divq"])
    assert abs(p["fout_hz"] - fout) <= 0.005 * fout
    assert p["filter_range"] == 1                     # PFD 12 MHz


def test_pll_refusals():
    with pytest.raises(BoardTopError):
        pll_ice40(12e6, 10e6)                         # below the iCE40 PLL's 16 MHz
    with pytest.raises(BoardTopError):
        pll_ecp5(25e6, 1e6)


def test_engine_ids_round_trip():
    for tokens in (1, 16, 64, 2048):
        for d_h in (16, 32, 64, 128):
            for modes in (("analytic",), ("analytic", "ode-drive", "ode-pairwise")):
                engine_id = encode_engine_id(tokens, d_h, modes)
                assert 0x80 <= engine_id <= 0xFF
                assert decode_engine_id(engine_id) == {
                    "design": "attention", "max_tokens": tokens, "max_d_h": d_h,
                    "modes": modes}
    for tokens in (1, 16, 2048):
        for d_h in (16, 32, 128):                   # softmax only: bits 7-6 = 01
            engine_id = encode_engine_id(tokens, d_h, ("softmax",))
            assert engine_id & 0xC0 == ENGINE_SOFTMAX
            assert decode_engine_id(engine_id) == {
                "design": "attention", "max_tokens": tokens, "max_d_h": d_h,
                "modes": ("softmax",)}
    assert decode_engine_id(ENGINE_LOOPBACK) == {"design": "link"}
    for bad in ((48, 32), (64, 8), (64, 48)):
        with pytest.raises(BoardTopError):
            encode_engine_id(*bad, ("analytic",))
    with pytest.raises(BoardTopError, match="not both"):
        encode_engine_id(16, 32, ("analytic", "softmax"))
    with pytest.raises(ValueError):
        decode_engine_id(0x7E)


def test_simulation_tops_and_their_formats():
    top = unused(AttentionTop(None, max_tokens=16, max_d_h=32, divisor=4))
    assert top.format.engine_id == encode_engine_id(16, 32, ("analytic",))
    assert top.out_fifo_depth == 1024               # 16 rows of 56 items
    assert top.format.byte_timeout == 2000
    assert set(top.signature.members) == {"rxd", "txd", "busy", "done", "error", "watchdog"}
    with pytest.raises(BoardTopError, match="divisor"):
        AttentionTop(None)
    with pytest.raises(BoardTopError):
        LinkTop(None, divisor=3)                      # the UART needs 4 clocks a bit
    assert unused(LinkTop(None, divisor=4)).format.engine_id == ENGINE_LOOPBACK


def test_board_parameters():
    ulx3s = unused(AttentionTop("ulx3s-85f"))
    assert (ulx3s.max_tokens, ulx3s.max_d_h, ulx3s.modes) == (64, 32, ("analytic",))
    assert ulx3s.clk_hz == 40e6 and ulx3s.divisor == round(40e6 / 115200)
    assert ulx3s.pll_params["clki_div"] == 5 and ulx3s.format.max_payload == 1024
    crab = unused(AttentionTop("orangecrab-25f"))
    assert crab.clk_hz == 56e6
    ice = unused(LinkTop("icebreaker"))
    assert ice.clk_hz == 24e6 and ice.pll_params["divf"] == 63
    direct = unused(AttentionTop("ulx3s-85f", pll=False))
    assert direct.clk_hz == 25e6 and direct.pll_params is None
    with pytest.raises(UnknownBoard):
        AttentionTop("nope")
    with pytest.raises(BoardTopError):
        top_for("ulx3s-85f", "cordic")


def test_the_icebreaker_head():
    """The iCEBreaker's head: softmax only, T 16, d_h 32, iterative CORDIC, the output FIFO
    in SPRAM, clocked by the board's 12 MHz without the PLL (the head's Fmax on the UP5K is
    below the PLL's 16 MHz minimum); its link design keeps the PLL's 24 MHz."""
    ice = unused(AttentionTop("icebreaker"))
    assert (ice.max_tokens, ice.max_d_h, ice.modes) == (16, 32, ("softmax",))
    assert ice.cordic_arch == "iterative" and ice.out_fifo == "spram"
    assert ice.pll_params is None and ice.clk_hz == 12e6 and ice.divisor == 104
    assert decode_engine_id(ice.engine_id)["modes"] == ("softmax",)
    assert spec_for_head(decode_engine_id(ice.engine_id)) is TOPS["icebreaker"]
    assert ice.out_fifo_depth == 1024                 # 16 rows of 56 items
    faster = unused(AttentionTop("icebreaker", clk_mhz=18))
    assert faster.pll_params["fout_hz"] == 18e6       # another clock: the PLL's
    assert unused(LinkTop("icebreaker")).clk_hz == 24e6


def test_a_board_without_a_head_is_refused_before_any_tool(monkeypatch):
    monkeypatch.setitem(TOPS, "icebreaker", dataclasses.replace(
        TOPS["icebreaker"], fits=False, refusal="no head fits"))
    with pytest.raises(DesignDoesNotFit, match="no head fits"):
        AttentionTop("icebreaker")
    unused(AttentionTop("icebreaker", force=True))


@pytest.mark.parametrize("board, design, pll, uart", [
    ("ulx3s-85f", "attention", "EHXPLLL", "uart_0__rx__io"),
    ("orangecrab-25f", "attention", "EHXPLLL", "header_uart_0__rx__io"),
    ("icebreaker", "link", "SB_PLL40_PAD", "uart_0__rx__io"),
    ("icebreaker", "attention", None, "uart_0__tx__io"),
    ("ulx3s-85f", "link", "EHXPLLL", "uart_0__tx__io"),
])
def test_board_tops_elaborate(board, design, pll, uart):
    """Each top elaborates for its board's platform: the PLL instance, the UART pins, the
    LEDs and the board clock's constraint are in amaranth's build plan (no tool runs)."""
    plan = elaborate_top(board, design)
    rtlil = plan.files["top.il"]
    rtlil = rtlil.decode() if isinstance(rtlil, bytes) else rtlil
    if pll is None:
        assert "SB_PLL40" not in rtlil and "EHXPLLL" not in rtlil
    else:
        assert f"cell \\{pll}" in rtlil
    constraints = next(text for name, text in plan.files.items()
                       if name.endswith((".lpf", ".pcf")))
    constraints = constraints.decode() if isinstance(constraints, bytes) else constraints
    assert uart in constraints
    # the board clock pin at its own frequency (nextpnr derives the PLL's output from it)
    pin = {"ulx3s-85f": 'PORT "clk25_0__io" 25000000.0 HZ', "icebreaker": "clk12_0__io 12.0",
           "orangecrab-25f": 'PORT "clk_0__io" 48000000.0 HZ'}[board]
    assert pin in constraints
    if board == "orangecrab-25f":
        assert "N17" in constraints and "M18" in constraints and "rgb_led" in constraints
    else:
        assert "led_0__io" in constraints


@pytest.mark.slow
@pytest.mark.build
def test_ulx3s_attention_build_meets_timing(tmp_path):
    """The ULX3S-85F top (head T 64, d_h 32, analytic) through Yosys and nextpnr."""
    from oscarray.run_flow import build_board
    result = build_board("ulx3s-85f", "attention", build_root=tmp_path)
    print(result)
    assert result["timing_met"], result
    assert result["target_mhz"] == 40.0 and result["dsp"] >= 16
    assert result["lut"] < 83640


@pytest.mark.parametrize("depth, push_prob, pop_prob", [(4, 0.9, 0.3), (5, 0.5, 0.9),
                                                       (1, 0.7, 0.7), (64, 1.0, 0.05)])
def test_single_port_fifo_keeps_order_and_capacity(depth, push_prob, pop_prob):
    """SinglePortFifo: every item out once, in order, under random pushes and pops; it
    refuses a push only when `depth` items wait in memory (plus one at the output)."""
    fifo = SinglePortFifo(16, depth)
    rng = np.random.default_rng(depth)
    got, sent = [], []

    async def bench(ctx):
        value = 0
        for _ in range(40 * depth + 400):
            push, pop = rng.random() < push_prob, rng.random() < pop_prob
            ctx.set(fifo.w_data, value)
            ctx.set(fifo.w_en, push)
            ctx.set(fifo.r_en, pop)
            w_rdy, r_rdy, r_data = ctx.get(fifo.w_rdy), ctx.get(fifo.r_rdy), ctx.get(fifo.r_data)
            if not w_rdy:                           # full: depth in memory, r_rdy at the output
                assert len(sent) - len(got) == depth + r_rdy
            if push and w_rdy:
                sent.append(value)
                value = (value + 1) & 0xFFFF
            if pop and r_rdy:
                got.append(r_data)
            await ctx.tick()
        ctx.set(fifo.w_en, 0)
        ctx.set(fifo.r_en, 1)
        for _ in range(2 * depth + 4):
            if ctx.get(fifo.r_rdy):
                got.append(ctx.get(fifo.r_data))
            await ctx.tick()

    sim = Simulator(fifo)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert got == sent and len(sent) > depth


def test_the_spram_fifo_is_a_single_port_memory():
    """The iCEBreaker top's output FIFO: one memory asking for Yosys's "huge" RAM (the
    SPRAM), without init (its name's NO_INIT_SUFFIX), both ports on one address."""
    from oscarray.hdl.array import NO_INIT_SUFFIX
    plan = elaborate_top("icebreaker", "attention")
    rtlil = plan.files["top.il"]
    rtlil = rtlil.decode() if isinstance(rtlil, bytes) else rtlil
    assert f"mem{NO_INIT_SUFFIX}" in rtlil and 'attribute \\ram_style "huge"' in rtlil
    assert tops.TOPS["ulx3s-85f"].out_fifo == "bram"


