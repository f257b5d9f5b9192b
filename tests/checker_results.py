"""Reading a checker's result in tests: what the checker tests share."""

from gptcourse.checks import PASS_MARK, Check

NOT_WRITTEN = "not written yet"


def has(result: Check, words: str) -> bool:
    """True if one of the checker's findings contains `words`."""
    return any(words in problem for problem in result.problems)


def all_passed(result: Check, capsys) -> bool:
    """True if the check passed and every line it printed is a pass."""
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    return result.passed and bool(lines) and all(line.startswith(PASS_MARK) for line in lines)


def problems_of(result: Check) -> str:
    """The checker's findings on one line, for an assertion's message."""
    return " | ".join(result.problems)


def assert_diagnosed(result: Check, fragment: str) -> None:
    """The check failed, and one of its findings names the mistake (`fragment`)."""
    assert not result.passed
    assert any(fragment in p for p in result.problems), problems_of(result)
