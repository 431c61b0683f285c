"""`kit demo` rejects bad arguments with one line naming them, before any work."""
import pytest

from kit.cli import main


@pytest.mark.parametrize("argv,name", [
    (["demo", "--mem", "1.5XiB"], "mem"), (["demo", "--guest-mem", "lots"], "guest_mem"),
    (["demo", "--mem", "3GiB"], "guest_mem"), (["demo", "--cores", "0"], "cores")])
def test_demo_bad_arguments(argv, name, capsys, tmp_path):
    out = tmp_path / "r.html"
    assert main(argv + ["--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"kit demo: {name}") and not out.exists()


def test_demo_small_host_writes_the_report(tmp_path, capsys):
    out = tmp_path / "r.html"
    assert main(["demo", "--mem", "8GiB", "--guest-mem", "4GiB", "--cores", "8", "--out", str(out)]) == 0
    html = out.read_text()
    assert "split-on-demand" in html and "<script" not in html
    assert "RMP #PF" in capsys.readouterr().out      # the `none` row crashes the host
