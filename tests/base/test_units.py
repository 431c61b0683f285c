import pytest

from kit.units import GiB, KiB, MiB, PAGE_1G, PAGE_2M, PAGE_4K, TiB, check_level, format_size, parse_size


@pytest.mark.parametrize("text,value", [
    ("1.5TiB", 3 * 512 * GiB), ("160GiB", 160 * GiB), ("2M", 2 * MiB), ("4096", 4096),
    ("4k", 4 * KiB), (" 1 TB ", TiB), ("0.5G", 512 * MiB), (".5GiB", 512 * MiB), (7, 7),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "abc", "1.5XiB", "-1G", "1..2G", "1e3", "G"])
def test_parse_size_rejects_text(text):
    with pytest.raises(ValueError, match="guest_mem"):
        parse_size(text, name="guest_mem")


def test_parse_size_rejects_fractional_bytes_and_types():
    with pytest.raises(ValueError, match="whole number of bytes"):
        parse_size("1.5B")
    with pytest.raises(ValueError, match="negative"):
        parse_size(-1)
    with pytest.raises(TypeError):
        parse_size(1.5)
    with pytest.raises(TypeError):
        parse_size(True)


def test_levels_and_format():
    assert (PAGE_4K, PAGE_2M, PAGE_1G) == (4096, 2 * MiB, GiB)
    assert format_size(3 * 512 * GiB) == "1536GiB" and format_size(TiB) == "1TiB"
    assert check_level(PAGE_2M) == PAGE_2M
    with pytest.raises(ValueError, match=r"level: must be one of PAGE_4K \(4096\), PAGE_2M"):
        check_level(PAGE_1G)
