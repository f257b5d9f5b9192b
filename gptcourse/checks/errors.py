"""What the errors learner code raises usually mean, in the course's words.

`explain_error` turns an exception into one diagnosis: the check's own tables first, then the
common torch and Python errors by a fragment of their text, then the kind of error. Torch's or
Python's first line is kept in brackets, so nothing the learner needs is lost.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

Known = Mapping["str | type[BaseException]", str]

# Common torch errors that no check's own table explains: what they usually mean in learner code.
# Tried last; the diagnosis keeps torch's first line, so nothing the learner needs is lost.
TORCH_ERRORS = {
    "cannot be multiplied": "a matrix product got shapes that do not fit: the last dimension of "
        "the left operand must equal the first (or second-to-last) of the right one",
    "must match the size of tensor": "two tensors in one elementwise operation have shapes that "
        "do not broadcast: print the shapes and line up the dimensions (keepdim=True, or a "
        "(B, 1) column)",
    "Sizes of tensors must match except in dimension": "torch.cat got tensors whose other "
        "dimensions differ: check the dimension you join on",
    "view size is not compatible": "the tensor is not contiguous (after transpose or permute): "
        "call .contiguous() before .view, or use .reshape",
    "Dimension out of range": "a dim= argument names a dimension the tensor does not have: "
        "count dimensions from the end (dim=-1)",
    "expected scalar type": "two tensors have different dtypes: convert one (for example "
        ".float() or .long()) before combining them",
}

# Errors Python and torch raise from learner code, by a fragment of their text: the usual mistake
# behind each, in the course's words. Tried after the check's own tables and TORCH_ERRORS.
PYTHON_ERRORS: dict[str | re.Pattern, str] = {
    # Class.method() short of an argument: the method was called on the class, not an object.
    re.compile(r"\w\.\w+\(\) missing \d+ required positional argument"): "a method was "
        "called on the class, not on an object, so the first argument took the place of self: "
        "create the object first (thing = Thing(...)) and call thing.method(...)",
    "index out of range in self": "an id is at least the size of an embedding table: the table "
        "was built with a smaller vocab_size than the ids need, or the ids came from a "
        "global variable instead of the argument",
    "required positional argument: 'self'": "a class was used where an instance is needed: "
        "create the object first (Thing(...)), then call its method on the object",
    "upper bound and lower bound inconsistent with step sign": "torch.arange got its bounds in "
        "the wrong order: arange(start, end) counts up from start to end - 1, so start <= end",
    "upper bound and larger bound inconsistent with step sign": "torch.arange got its bounds in "
        "the wrong order: arange(start, end) counts up from start to end - 1, so start <= end",
    "'bytes' object cannot be interpreted as an integer": "bytes(...) was given a list of byte "
        "strings: join byte strings with b''.join(parts); bytes(list) wants small integers",
    "string argument without an encoding": "bytes(...) was given text: turn text into bytes with "
        "text.encode('utf-8'), and bytes back into text with .decode('utf-8')",
    "'float' object cannot be interpreted as an integer": "a size or a range got a float: use "
        "integer division (//) or int(...) for counts and indices",
    "list indices must be integers": "a list was indexed with a float or a tensor: use integer "
        "division (//), int(...) or .item() for the index",
    "cannot be converted to Scalar": ".item() (or float/int) was called on a tensor with more "
        "than one number: reduce it first (.mean() or .sum()) or index one element",
    "Expected target size": "cross_entropy wants logits of shape (N, C) and targets of shape "
        "(N,): flatten with logits.view(B * T, C) and targets.view(B * T)",
    "only one element tensors can be converted": ".item() (or float/int) was called on a tensor "
        "with more than one number: reduce it first (.mean() or .sum()) or index one element",
    "Boolean value of Tensor with more than one value is ambiguous": "an if, and, or not got a "
        "whole tensor: compare one element, or use .all() / .any()",
    "does not require grad and does not have a grad_fn": "backward() was called on a value cut "
        "off from the graph: no .item(), .detach() or torch.no_grad() before loss.backward()",
    "backward through the graph a second time": "backward() ran twice through one graph: compute "
        "the loss afresh (a new forward pass) for every step",
    "leaf Variable that requires grad is being used in an in-place operation": "a parameter was "
        "changed in place while autograd was watching: update weights inside torch.no_grad()",
    "probability tensor contains either": "torch.multinomial needs probabilities: apply softmax "
        "to the logits first (and keep the temperature above 0)",
    "stack expects each tensor to be equal size": "torch.stack got pieces of different lengths: "
        "a slice runs past the end of the data, so the last piece is short; check the slice bounds",
    "stack expects a non-empty TensorList": "nothing to stack: the loop ran zero times; check "
        "its range",
    "Expected input batch_size": "cross_entropy wants logits of shape (N, C) and targets of "
        "shape (N,): flatten with logits.view(B * T, C) and targets.view(B * T)",
    "multi-target not supported": "cross_entropy wants targets of shape (N,): flatten them with "
        "targets.view(-1) (and the logits to (N, C))",
    "Expected floating point type for target": "the targets of cross_entropy must be class ids "
        "(a long tensor of shape (N,)), not probabilities",
    "Expected tensor for argument #1 'indices'": "an embedding was given floats: ids must be "
        "integers (a long tensor)",
    "Error(s) in loading state_dict": "the parameter names or shapes differ from the reference: "
        "keep the names and sizes the exercise gives",
    "too many values to unpack": "a result was unpacked into a different number of names than "
        "it holds: check what the function returns (for example (logits, loss))",
    "not enough values to unpack": "a result was unpacked into a different number of names than "
        "it holds: check what the function returns (for example (logits, loss))",
    "cannot unpack non-iterable": "a single value was unpacked into several names: return a "
        "tuple (for example return logits, loss)",
    "NoneType": "a value is None: a function without a `return` line gives None, and so does "
        "an in-place list method such as .append or .sort",
    "is not callable": "something that is not a function was called: a name now holds a tensor "
        "or a number (a variable named like a function, or a module's output called again)",
    "positional argument": "the function takes a different number of arguments than the "
        "exercise passes: keep the def line the exercise gives (and self first in a method)",
    "has no attribute": "an attribute is read that was never set: check that the names set in "
        "__init__ (self.name = ...) are the ones used later, and that an object, not its class, "
        "is used",
    "unsupported operand type": "an operation got values that do not combine (a list and a "
        "tensor, a number and None): check what each step returns",
    "out of bounds": "an index runs past the end: check loop and slice bounds (the last start "
        "is len - size, not len), and that the code reads the argument it was given, not a "
        "variable from the notebook",
    "out of range": "an index runs past the end: check loop and slice bounds (the last start "
        "is len - size, not len), and that the code reads the argument it was given, not a "
        "variable from the notebook",
}

# When no fragment matches: what the kind of error usually means in learner code.
ERROR_KINDS = {
    RecursionError: "the function calls itself without end: in a subclass call "
        "super().forward(x), not self(x) or self.forward(x)",
    ZeroDivisionError: "a division by zero: a count or a length is 0 here (an empty input, or "
        "a loop that never ran)",
    KeyError: "a dict was asked for a key it does not hold: check which keys you stored, and "
        "that the lookup uses the same kind of key (a tuple, an int, a str)",
    IndexError: "an index runs past the end: check loop and slice bounds, and that the code "
        "reads the argument it was given, not a variable from the notebook",
    NameError: "a name is not defined: run the cells above in order, and check the spelling",
    AttributeError: "an attribute is read that was never set: check the names set in __init__",
    TypeError: "a value of the wrong kind reached an operation (a list for a tensor, a class "
        "for an object, None for a number): check what each step returns",
    ValueError: "a value has the right type but an impossible size or content: print the "
        "shapes and values just before the failing line",
    AssertionError: "an assert in your code failed: the condition it tests is false for "
        "this input",
    RuntimeError: "torch refused an operation: print the shapes and dtypes of its inputs just "
        "before the failing line",
}


def explain_error(exc: BaseException, *tables: Known) -> str:
    """The course's diagnosis of an exception from learner code, keeping its first line."""
    first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    for table in tables:  # the most specific tables first; their diagnoses stand alone
        for key, diagnosis in table.items():
            if isinstance(key, type) and isinstance(exc, key) or isinstance(key, str) and key in str(exc):
                return diagnosis
    for table in (TORCH_ERRORS, PYTHON_ERRORS):
        for key, diagnosis in table.items():
            if isinstance(key, re.Pattern) and key.search(str(exc)) or isinstance(key, str) and key in str(exc):
                return f"{diagnosis} ({first_line})" if first_line else diagnosis
    for kind, diagnosis in ERROR_KINDS.items():
        if isinstance(exc, kind):
            return f"{diagnosis} ({first_line})" if first_line else diagnosis
    return (f"your code stopped with an error: run it on its own in a new cell to see the line "
            f"({first_line})" if first_line else "your code stopped with an error: run it on its "
            "own in a new cell to see the line")
