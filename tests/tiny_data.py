"""A tiny tool-use data set (30 examples: calls of two functions, single and double, and no-call questions) for the
pipeline tests on the tiny random model."""

from itool_core.calls import ToolCall
from itool_core.data.records import Example

TOOLS = [
    {
        "name": "add",
        "description": "Add two numbers",
        "parameters": {
            "type": "dict",
            "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
            "required": ["a", "b"],
        },
    },
    {
        "name": "shout",
        "description": "Upper-case a text",
        "parameters": {"type": "dict", "properties": {"text": {"type": "string"}}, "required": ["text"]},
    },
]


def _data(n=30):
    exs = []
    for i in range(n):
        if i % 5 == 0:
            exs.append(Example(f"t/{i}", "test", "nocall", TOOLS, [{"role": "user", "content": f"Poem #{i}?"}], []))
        elif i % 2:
            exs.append(
                Example(
                    f"t/{i}",
                    "test",
                    "add",
                    TOOLS[: 1 + i % 2],
                    [{"role": "user", "content": f"What is {i} plus {i + 1}?"}],
                    [ToolCall("add", {"a": i, "b": i + 1})] * (1 + i % 3 // 2),
                )
            )
        else:
            exs.append(
                Example(
                    f"t/{i}",
                    "test",
                    "shout",
                    TOOLS,
                    [{"role": "user", "content": f"Shout word{i}"}],
                    [ToolCall("shout", {"text": f"word{i}"})],
                )
            )
    return exs
