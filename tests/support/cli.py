"""Checks on the command line's answers."""
from maskrcnn_fast import cli


def cli_fails(capsys, argv, match):
    """``maskrcnn-fast ARGV`` fails with one line, ``maskrcnn-fast: error: ...`` containing
    ``match``, and no traceback."""
    rc = cli.main(argv)
    err = capsys.readouterr().err
    assert rc != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("maskrcnn-fast: error:") and match in lines[0], err
    assert "Traceback" not in err
