"""The host driver (oscarray/driver.py) against golden `LinkDevice`, and through the RTL.

Fast tests: a fake transport that feeds the driver's bytes to golden LinkDevice (the
specification of the RTL link, byte for byte) with an engine model behind it: the loopback
engine (sim/link.py FakeEngineModel) or a model of the attention head that answers with
golden-fixed's integers as the head's items. Faults are injected on the way (a damaged
frame, a lost answer) to check the retries, and the error answers (BUSY, WATCHDOG,
BAD_PAYLOAD) surface as golden's DeviceError subclasses.

Simulation: `run_case(sim=True)` on a small case through a board top's RTL in cocotb, every
byte through its UART pins (bit-exact with golden-fixed, clocks as `cycles_per_head`), and
the link top's loopback self-test.
"""

import numpy as np
import pytest

from oscarray.boards.top import ENGINE_LOOPBACK, encode_engine_id
from oscarray.driver import (CapabilityMismatch, Driver, NoResponse, engine_format,
                             link_selftest)
from oscarray.golden.attention import random_case, validate_case
from oscarray.golden.attention_fixed import DEFAULT_CONFIG, attention_fixed
from oscarray.golden.link import (BadPayloadError, BusyError, Command, LinkDevice, LinkError,
                                  WatchdogError, encode_frame)
from oscarray.hdl.attention import (HEADER, KINDS, cycles_per_head, head_writes, load_layout,
                                    output_layout)
from oscarray.hdl.link import link_format
from oscarray.sim.link import FakeEngineModel, harness_layouts


class FakeTransport:
    """Bytes to golden LinkDevice and its answers back, with faults on request:
    `damage` frame numbers whose byte 5 gets a bit flipped on the way (the device answers
    BAD_CRC), `lose` frame numbers whose answer never arrives."""

    def __init__(self, device: LinkDevice, damage=(), lose=()):
        self.device, self.buffer = device, bytearray()
        self.damage, self.lose = set(damage), set(lose)
        self.frames = 0
        self.settles = 0
        self.commands = []                  # the CMD byte of each frame sent

    def write(self, data: bytes) -> None:
        data = bytearray(data)
        self.frames += 1
        self.commands.append(data[1] if len(data) > 1 else None)
        if self.frames in self.damage and len(data) > 5:
            data[5] ^= 0x10
        answer = self.device.feed(bytes(data))
        if self.frames not in self.lose:
            self.buffer += answer

    def read(self, n: int) -> bytes:
        out = bytes(self.buffer[:n])
        del self.buffer[:n]
        return out

    def settle(self, clocks) -> None:
        self.settles += 1
        self.device.timeout()
        self.buffer.clear()

    def idle(self) -> None:
        pass


def loopback(**faults):
    fmt = link_format(*harness_layouts(), engine_id=ENGINE_LOOPBACK, max_payload=64,
                      byte_timeout=100, watchdog_cycles=1000)
    engine = FakeEngineModel(fmt)
    device = LinkDevice(fmt, engine)
    return Driver(FakeTransport(device, **faults)), device, engine, fmt


# ---------------------------------------------------------------------------------------------
# The codec with the loopback engine


def test_ping_learns_the_device_and_its_engine():
    driver, _, _, fmt = loopback()
    assert driver.ping() == fmt
    assert driver.identity == {"design": "link"}
    assert driver.stats["answers"] == {"OK": 1}


def test_ping_checks_the_expected_widths():
    _, device, _, fmt = loopback()
    other = link_format(*harness_layouts(data_bits=16), engine_id=ENGINE_LOOPBACK)
    with pytest.raises(CapabilityMismatch):
        Driver(FakeTransport(device), other).ping()
    # the same widths with another max_payload / timeouts are the device's to choose
    same = link_format(*harness_layouts(), engine_id=ENGINE_LOOPBACK, max_payload=300)
    assert Driver(FakeTransport(device), same).ping() == fmt


def test_selftest_writes_and_replays_memory():
    driver, *_ = loopback()
    result = link_selftest(driver, words=200)
    assert result["mismatches"] == 0 and result["words"] == 192
    assert result["busy_answered"] is True
    assert result["answers"]["BUSY"] == 1 and result["retries"] == 0


def test_write_splits_frames_and_counts():
    driver, _, engine, fmt = loopback()
    rows = np.stack([np.zeros(40, int), np.arange(40), np.arange(40) * 3], 1)
    assert driver.write(rows) == 40
    assert engine.memory[:40] == list(range(0, 120, 3))
    assert driver.stats["frames"] == 1 + -(-40 // fmt.max_writes)      # PING + WRITEs


def test_busy_and_watchdog_answers():
    driver, device, _, fmt = loopback()
    ctrl = (1 << fmt.target_bits) - 1
    driver.write(np.array([(ctrl, 0, 0)]))      # run = 0: busy until ABORT
    driver.start()
    with pytest.raises(BusyError):
        driver.start()
    with pytest.raises(BusyError):
        driver.write(np.array([(0, 1, 2)]))
    assert driver.status().busy
    device.expire_watchdog()
    report = driver.status()                    # a WATCHDOG answer, returned as its report
    assert report.watchdog and report.busy
    with pytest.raises(LinkError, match="watchdog"):
        driver.read_items(1)
    with pytest.raises(LinkError, match="watchdog"):
        driver.wait_idle()
    driver.abort()
    report = driver.status()
    assert not report.watchdog and not report.busy


def test_watchdog_on_write_raises():
    """A WRITE that the engine stopped taking is answered WATCHDOG (with the writes done):
    the device's answer is injected here (the golden model's engine always takes them)."""
    from oscarray.golden.link import Status, encode_response
    driver, *_ = loopback()
    driver.ping()
    transport = driver.transport
    transport.write = lambda data: transport.buffer.extend(
        encode_response(Status.WATCHDOG, (0).to_bytes(2, "little")))
    with pytest.raises(WatchdogError):
        driver.write(np.array([(0, 1, 2)]))
    assert driver.stats["retries"] == 0


def test_bad_payload_is_not_retried():
    driver, *_ = loopback()
    driver.ping()
    with pytest.raises(BadPayloadError):
        driver.command(Command.STATUS, b"\x00")
    assert driver.stats["retries"] == 0


def test_damaged_frames_are_sent_again():
    # frames 2 and 3 (the first WRITE and its first retry) arrive damaged: BAD_CRC twice
    driver, _, engine, fmt = loopback(damage={2, 3})
    rows = np.stack([np.zeros(4, int), np.arange(4), np.arange(4) + 7], 1)
    assert driver.write(rows) == 4
    assert engine.memory[:4] == [7, 8, 9, 10]
    assert driver.stats["answers"]["BAD_CRC"] == 2 and driver.stats["retries"] == 2
    assert driver.transport.settles >= 3          # the first PING's, and one per retry


def test_damage_beyond_the_retries_raises():
    driver, *_ = loopback(damage={2, 3, 4, 5})
    driver.ping()
    from oscarray.golden.link import BadCrcError
    with pytest.raises(BadCrcError):
        driver.status()


def test_lost_answers():
    # a lost STATUS answer is asked again; a lost READ answer is not (items are gone)
    driver, _, _, fmt = loopback(lose={2})
    driver.ping()
    assert not driver.status().busy
    assert driver.stats["retries"] == 1
    driver, *_ = loopback(lose={2})
    driver.ping()
    with pytest.raises(NoResponse):
        driver.read_items(1)


def test_read_items_stops_when_the_engine_has_no_more():
    driver, _, _, fmt = loopback()
    ctrl = (1 << fmt.target_bits) - 1
    driver.write(np.array([(ctrl, 0, 3), (ctrl, 2, 5)]))   # run 3 clocks, 5 items
    driver.start()
    with pytest.raises(LinkError, match="after 5 of 6"):
        driver.read_items(6)


def test_garbage_before_an_answer_is_skipped():
    driver, device, _, fmt = loopback()
    driver.ping()
    transport = driver.transport
    real = transport.write
    transport.write = lambda data: (transport.buffer.extend(b"\x00\x13\xa5"), real(data))
    assert not driver.status().busy


# ---------------------------------------------------------------------------------------------
# A model of the attention head behind golden LinkDevice


class HeadModel:
    """The attention head as golden `EngineModel`: it records the writes; START finds which
    head of `case` was written (its q words) and gives that head's golden-fixed integers as
    the head's items, in row order (HEADER, attn, out)."""

    def __init__(self, case, max_tokens, max_d_h):
        self.case = case
        self.writes = head_writes(case, max_tokens=max_tokens, max_d_h=max_d_h)
        golden = attention_fixed(case)
        e_w = np.array(golden["scales"]["w"]).reshape(case.heads, case.tokens)
        self.items = []
        for h in range(case.heads):
            rows = []
            for i in range(case.tokens):
                header = {"e_w": e_w[h, i], "h_x": golden["h_int"][h, i, 0],
                          "h_y": golden["h_int"][h, i, 1], "theta": golden["theta_int"][h, i],
                          "cos": golden["x_int"][h, i, 0], "sin": golden["x_int"][h, i, 1],
                          "steps": 0, "converged": 1}
                rows += [(int(header[name]), KINDS[name]) for name in HEADER]
                rows += [(int(a), KINDS["attn"]) for a in golden["attn_int"][h, i]]
                rows += [(int(o), KINDS["out"]) for o in golden["out_int"][h, i]]
            self.items.append(rows)
        self.memory = {}
        self.reset()

    def reset(self):
        self.busy, self.done, self.queue, self.starts = False, False, [], 0

    def write(self, target, addr, data):
        self.memory[(target, addr)] = data

    def start(self):
        for h, rows in enumerate(self.writes):
            if all(self.memory.get((t, a)) == d for t, a, d in rows.tolist()):
                self.queue = list(self.items[h])
                self.done = True
                return
        raise AssertionError("START with no head of the case written")

    def status(self):
        case = self.case
        return self.done, False, cycles_per_head(case.tokens, case.d_h, case.causal)

    def pending(self):
        return bool(self.queue)

    def take(self):
        return self.queue.pop(0)


def head_driver(case, max_tokens=16, max_d_h=32, **faults):
    fmt = link_format(load_layout(DEFAULT_CONFIG, max_tokens, max_d_h),
                      output_layout(DEFAULT_CONFIG, max_tokens, max_d_h), max_payload=256,
                      engine_id=encode_engine_id(max_tokens, max_d_h, ("analytic",)))
    device = LinkDevice(fmt, HeadModel(case, max_tokens, max_d_h))
    return Driver(FakeTransport(device, **faults)), fmt


@pytest.mark.parametrize("shape, tokens", [("sva", 9), ("kws", 12)])
def test_run_case_decodes_and_assembles_like_the_rtl_engine(shape, tokens):
    from oscarray.flows import _attention_golden_fixed, attention_rtl_mismatches
    arrays = random_case(shape, 3)
    for key in ("q", "k", "v", "anchors"):
        arrays[key] = arrays[key][:, :tokens]
    case = validate_case(arrays)
    driver, fmt = head_driver(case)
    assert driver.ping() == fmt
    assert driver.attention_head()["max_tokens"] == 16
    result = driver.run_case(case)
    assert attention_rtl_mismatches(case, result) == 0
    golden = _attention_golden_fixed(case)
    np.testing.assert_array_equal(result["attn"], golden["attn"])
    np.testing.assert_array_equal(result["out"], golden["out"])
    assert result["scales"]["w"] == golden["scales"]["w"]
    assert list(result["cycles"]) == [cycles_per_head(case.tokens, case.d_h, case.causal)] \
        * case.heads


def test_run_case_survives_damage_and_a_lost_read():
    from oscarray.flows import attention_rtl_mismatches
    case = validate_case(random_case("sva", 1))
    clean, _ = head_driver(case)
    clean.run_case(case)
    commands = clean.transport.commands
    first_write = commands.index(Command.WRITE) + 1          # frame numbers count from 1
    first_read = commands.index(Command.READ) + 1
    # the first WRITE arrives damaged (BAD_CRC: sent again, one frame later everything
    # shifts by one); the first READ's answer is lost: the whole head runs again
    driver, _ = head_driver(case, damage={first_write}, lose={first_read + 1})
    result = driver.run_case(case)
    assert attention_rtl_mismatches(case, result) == 0
    sent = driver.transport.commands
    assert sent.count(Command.ABORT) == 2 and sent.count(Command.START) == 2
    assert driver.stats["answers"]["BAD_CRC"] == 1
    assert driver.stats["retries"] == 2


def test_run_case_refuses_what_the_board_head_cannot_hold():
    from oscarray.hdl.attention import AttentionHeadError
    case = validate_case(random_case("kws", 0))          # T = 49 > 16
    driver, _ = head_driver(validate_case(random_case("sva", 0)))
    with pytest.raises(AttentionHeadError):
        driver.run_case(case)
    assert driver.stats["frames"] == 1                   # the PING only


def test_run_case_refuses_the_loopback_engine():
    driver, *_ = loopback()
    with pytest.raises(CapabilityMismatch, match="loopback"):
        driver.run_case(validate_case(random_case("sva", 0)))


def test_engine_format_matches_the_tops():
    from oscarray.boards.top import AttentionTop, LinkTop, decode_engine_id
    top = AttentionTop(None, max_tokens=16, max_d_h=32, divisor=4)
    top._MustUse__silence = True
    assert decode_engine_id(top.format.engine_id) == {
        "design": "attention", "max_tokens": 16, "max_d_h": 32, "modes": ("analytic",)}
    want = engine_format(decode_engine_id(top.format.engine_id))
    assert want.value_bits == top.format.value_bits and want.addr_bits == top.format.addr_bits
    link = LinkTop(None, divisor=4)
    link._MustUse__silence = True
    assert engine_format({"design": "link"}).data_bits == link.format.data_bits


def test_frames_never_exceed_the_devices_payload():
    driver, _, _, fmt = loopback()
    driver.ping()
    sent = []
    real = driver.transport.write
    driver.transport.write = lambda data: (sent.append(len(data)), real(data))
    rows = np.stack([np.zeros(100, int), np.arange(100) % 64, np.arange(100)], 1)
    driver.write(rows)
    assert max(sent) <= fmt.max_payload + 6
    assert encode_frame(Command.PING)[0] == 0xA5


# ---------------------------------------------------------------------------------------------
# Through the RTL: a board top in cocotb, the driver on its UART pins


def test_run_case_sim_is_bit_exact(tmp_path, board_build_root):
    """`oscarray run --sim`: a small subject-verb case (T 9, d_h 32) through the top's UART
    pins at 4 clocks a bit; every integer equal to golden-fixed's, clocks = formula."""
    from oscarray.flows import attention_example
    from oscarray.run_flow import run_case
    case_path = tmp_path / "sva.npz"
    attention_example("sva", case_path, seed=2)
    out = tmp_path / "result.npz"
    summary = run_case(case_path, out, sim=True, build_root=board_build_root)
    print(summary)
    assert summary["mismatches"] == 0
    assert summary["cycles"] == summary["cycles_expected"]
    assert summary["framing_errors"] == 0 and summary["retries"] == 0
    saved = np.load(out)
    assert str(saved["engine"]) == "board-sim"
    assert saved["attn"].shape == (1, 9, 9)


def test_link_selftest_sim(board_build_root):
    from oscarray.run_flow import selftest
    result = selftest(sim=True, build_root=board_build_root, words=48)
    assert result["mismatches"] == 0 and result["busy_answered"]


@pytest.mark.slow
def test_run_case_sim_ode_drive(tmp_path, board_build_root):
    """An ode-drive case (the subject-verb example) on the top with the ODE modes (its own
    simulator build, several minutes): bit-exact, clocks = ode_cycles of its engine runs."""
    from oscarray.flows import attention_example_arrays
    from oscarray.golden.npz import write_npz
    from oscarray.run_flow import run_case
    arrays = attention_example_arrays("sva", 0)
    arrays["mode"] = "ode-drive"
    case_path = tmp_path / "sva_drive.npz"
    write_npz(case_path, {key: np.asarray(value) for key, value in arrays.items()})
    summary = run_case(case_path, tmp_path / "result.npz", sim=True,
                       build_root=board_build_root)
    assert summary["head"]["modes"] == ("analytic", "ode-drive", "ode-pairwise")
    assert summary["mismatches"] == 0 and summary["not_converged"] == 0
    assert summary["cycles"] == summary["cycles_expected"]


# ---------------------------------------------------------------------------------------------
# A softmax-only head (the iCEBreaker's)


class SoftmaxHeadModel(HeadModel):
    """A head built with the softmax mode alone, as golden `EngineModel`: the case through
    golden softmax_case, its items golden softmax_fixed's integers (zero headers, converged),
    its clocks those of the iterative CORDIC (the iCEBreaker's build)."""

    def __init__(self, case, max_tokens, max_d_h):
        from oscarray.golden.softmax import softmax_case, softmax_fixed
        self.case = case = softmax_case(case)
        self.writes = head_writes(case, max_tokens=max_tokens, max_d_h=max_d_h,
                                  modes=("softmax",))
        golden = softmax_fixed(case)
        header = [(1 if name == "converged" else 0, KINDS[name]) for name in HEADER]
        self.items = [sum(([*header, *[(int(a), KINDS["attn"]) for a in golden["attn_int"][h, i]],
                            *[(int(o), KINDS["out"]) for o in golden["out_int"][h, i]]]
                           for i in range(case.tokens)), [])
                      for h in range(case.heads)]
        self.memory = {}
        self.reset()

    def status(self):
        case = self.case
        return self.done, False, cycles_per_head(case.tokens, case.d_h, case.causal,
                                                 cordic_arch="iterative", mode="softmax")


def test_run_case_on_a_softmax_head_gives_softmax_results():
    """The iCEBreaker's head (T 16, d_h 32, softmax only): its engine id names it, and an
    attention case runs through softmax, as `oscarray softmax --engine rtl` gives it."""
    from oscarray.boards.top import TOPS, decode_engine_id, spec_for_head
    from oscarray.golden.softmax import softmax_case, softmax_fixed
    from oscarray.softmax_flow import softmax_rtl_mismatches
    spec = TOPS["icebreaker"]
    tokens, d_h = spec.max_tokens, spec.max_d_h
    engine_id = encode_engine_id(tokens, d_h, spec.modes)
    identity = decode_engine_id(engine_id)
    assert identity["modes"] == ("softmax",) and spec_for_head(identity) is spec
    fmt = link_format(load_layout(DEFAULT_CONFIG, tokens, d_h),
                      output_layout(DEFAULT_CONFIG, tokens, d_h), max_payload=256,
                      engine_id=engine_id)
    case = validate_case(random_case("sva", 4))                     # T 9, d_h 32, anchors
    driver = Driver(FakeTransport(LinkDevice(fmt, SoftmaxHeadModel(case, tokens, d_h))))
    assert driver.ping() == fmt and driver.attention_head() == identity
    result = driver.run_case(case)
    soft = softmax_case(case)
    assert softmax_rtl_mismatches(soft, result) == 0
    golden = softmax_fixed(soft)
    np.testing.assert_array_equal(result["attn_int"], golden["attn_int"])
    assert result["scales"] == golden["scales"]
    assert list(result["cycles"]) == [cycles_per_head(9, 32, case.causal,
                                                      cordic_arch="iterative",
                                                      mode="softmax")] * case.heads


@pytest.mark.slow
def test_run_case_sim_on_the_icebreaker_top(tmp_path, board_build_root):
    """`oscarray run --sim --board icebreaker`: the iCEBreaker's top as it is built (the
    softmax-only head with the iterative CORDIC, the output FIFO in the single-port memory)
    through its UART pins: bit-exact with golden softmax_fixed, clocks = formula."""
    from oscarray.flows import attention_example
    from oscarray.run_flow import run_case
    case_path = tmp_path / "sva.npz"
    attention_example("sva", case_path, seed=1)
    out = tmp_path / "result.npz"
    summary = run_case(case_path, out, sim=True, board="icebreaker",
                       build_root=board_build_root)
    print(summary)
    assert summary["head"]["modes"] == ("softmax",) and summary["mode"] == "softmax"
    assert summary["mismatches"] == 0
    assert summary["cycles"] == summary["cycles_expected"]
    assert summary["framing_errors"] == 0 and summary["retries"] == 0
    saved = np.load(out)
    assert str(saved["mechanism"]) == "softmax" and saved["attn"].shape == (1, 9, 9)


def test_a_board_head_keeps_its_modes():
    # A board's head is its top's: other modes are refused, not silently replaced.
    from oscarray.boards.top import top_spec
    from oscarray.golden.attention import random_case, validate_case
    from oscarray.run_flow import sim_top_options
    case = validate_case(random_case("sva", 0))
    spec = top_spec("ulx3s-85f")
    assert sim_top_options(case, "ulx3s-85f", modes=spec.modes)["modes"] == tuple(spec.modes)
    with pytest.raises(ValueError, match="its head has the modes"):
        sim_top_options(case, "ulx3s-85f", modes=("softmax",))
