"""CPU units from /proc/cpuinfo's flags."""

from engine.cpu import FEATURES, cpu_features

SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu vme sse2 avx avx2 avx512f avx512_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
processor\t: 1
flags\t\t: fpu
"""


def test_flags_of_the_first_processor_name_each_unit():
    got = cpu_features(SAPPHIRE_RAPIDS)
    assert got == {name: name != "avx_vnni" for name in FEATURES}


def test_no_flags_means_no_units():
    assert not any(cpu_features("").values())
    assert not any(cpu_features("flags\t: fpu sse2 avx\n").values())


def test_this_host_is_read():
    assert set(cpu_features()) == set(FEATURES)
