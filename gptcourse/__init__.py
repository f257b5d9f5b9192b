"""gptcourse: tested reference code for a course that builds a GPT from an empty file.

Each module is one concept of the course, for example `data`, `tokenizers`, `bigram`,
`attention`, `layers`, `model`, `generate`, `train`, `flops`. The notebooks build each
piece step by step, check it against these modules, and then import them.
"""

__version__ = "0.1.0"
