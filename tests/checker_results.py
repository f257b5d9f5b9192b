"""Reading a checker's result in tests: what the chapter 9 checker tests share."""

from gptcourse.checks import PASS_MARK, Check

NOT_WRITTEN = "not written yet"


def has(result: Check, words: str) -> bool:
    """True if one of the checker's findings contains `words`."""
    return any(words in problem for problem in result.problems)


def all_passed(result: Check, capsys) -> bool:
    """True if the check passed and every line it printed is a pass."""
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    return result.passed and bool(lines) and all(line.startswith(PASS_MARK) for line in lines)
