"""CPU identity of a profile table and whether a table is valid for a machine."""

from __future__ import annotations

from oserve.profiles.cpu_info import (
    CpuIdentity,
    cpu_precisions,
    current_cpu,
    fast_int8,
    native_bf16,
    parse_cpuinfo,
    select_table,
    table_validity,
)

ZEN4 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 17
model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu sse sse2 avx avx2 avx512f avx512dq avx512bw avx512_bf16 avx512_vnni sha_ni

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: SOMETHING ELSE
flags\t\t: fpu
"""
ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu sse avx avx2 fma
"""
SPR = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: avx2 avx512f avx512bw avx512_vnni avx512_bf16 avx512_fp16 amx_tile amx_bf16 amx_int8
"""
ARM = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 bf16 i8mm
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""


def test_parse_reads_first_block_and_only_perf_flags():
    cpu = parse_cpuinfo(ZEN4, logical_cpus=2)
    assert cpu.model == "AMD EPYC 9654 96-Core Processor"
    assert cpu.vendor == "AuthenticAMD"
    assert cpu.family == "25/17"
    assert cpu.flags == ("avx2", "avx512_bf16", "avx512_vnni", "avx512bw", "avx512f")
    assert cpu.logical_cpus == 2


def test_parse_arm_without_x86_flags():
    cpu = parse_cpuinfo(ARM)
    assert cpu.flags == ()
    assert cpu.vendor == "0x41"
    assert cpu.family == "0xd40"
    assert cpu_precisions(cpu) == ("fp32",)


def test_precisions_follow_flags():
    assert cpu_precisions(parse_cpuinfo(ZEN4)) == ("fp32", "int8", "bf16")
    assert cpu_precisions(parse_cpuinfo(ZEN3)) == ("fp32",)
    spr = parse_cpuinfo(SPR)
    assert native_bf16(spr) and fast_int8(spr)
    assert not native_bf16(parse_cpuinfo(ZEN3))


def test_table_validity():
    zen4 = parse_cpuinfo(ZEN4, 2)
    assert table_validity(zen4, parse_cpuinfo(ZEN4, 64)).ok  # core count is not compared
    other = table_validity(parse_cpuinfo(ZEN3), zen4)
    assert not other.ok and "7763" in other.reason
    no_record = table_validity(None, zen4)
    assert not no_record.ok and "does not record" in no_record.reason
    newer = zen4.model_copy(update={"family": "26/2"})  # same generic name under KVM, another generation
    assert not table_validity(zen4, newer).ok
    fewer = zen4.model_copy(update={"flags": ("avx2", "avx512f")})
    v = table_validity(fewer, zen4)
    assert not v.ok and "avx512_bf16" in v.reason


def test_current_cpu_reads_this_machine(tmp_path):
    here = current_cpu()
    assert isinstance(here, CpuIdentity) and here.logical_cpus >= 1
    f = tmp_path / "cpuinfo"
    f.write_text(SPR)
    assert current_cpu(f).model == "Intel(R) Xeon(R) Platinum 8480+"
    assert current_cpu(tmp_path / "missing").flags == ()


def test_table_records_measured_on(tmp_path):
    from oserve.testing.tables import synthetic_table

    t = synthetic_table({"a": {"c": 1.0}}, {"a": 1}, device_type="cpu")
    t = t.model_copy(update={"measured_on": parse_cpuinfo(ZEN4, 2)})
    t.save(tmp_path / "t.json")
    back = type(t).load(tmp_path / "t.json")
    assert back.measured_on == t.measured_on
    assert table_validity(back.measured_on, parse_cpuinfo(ZEN4)).ok


def test_select_table_picks_the_one_measured_here(tmp_path):
    from oserve.testing.tables import synthetic_table

    zen4, zen3 = parse_cpuinfo(ZEN4), parse_cpuinfo(ZEN3)
    base = synthetic_table({"a": {"c": 1.0}}, {"a": 1}, device_type="cpu")
    base.model_copy(update={"measured_on": zen3}).save(tmp_path / "zen3.json")
    base.save(tmp_path / "unknown.json")
    base.model_copy(update={"measured_on": zen4}).save(tmp_path / "zen4.json")
    (tmp_path / "broken.json").write_text("{")
    order = [tmp_path / n for n in ("broken.json", "zen3.json", "unknown.json", "zen4.json")]
    path, reasons = select_table(order, zen4)
    assert path == tmp_path / "zen4.json"
    assert set(reasons) == {str(p) for p in order[:3]}
    assert "7763" in reasons[str(tmp_path / "zen3.json")]
    assert select_table(order[:3], zen4)[0] is None
