"""Built-in chat templates, selectable by name with ``chat_template:`` in a config."""

from __future__ import annotations

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
ALPACA = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ message['content'] + '\\n\\n' }}{% elif message['role'] == 'user' %}"
    "{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + "
    "eos_token + '\\n\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
)
MISTRAL = (
    "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}"
    "{{ message['content'] + eos_token }}{% endif %}{% endfor %}"
)
EXAONE = (
    "{% for message in messages %}{% if message['role'] == 'system' %}"
    "{{ '[|system|]' + message['content'] + '[|endofturn|]\\n' }}"
    "{% elif message['role'] == 'user' %}{{ '[|user|]' + message['content'] + '\\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '[|assistant|]' + message['content'] + "
    "'[|endofturn|]\\n' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '[|assistant|]' }}{% endif %}"
)

BUILTIN = {
    "chatml": CHATML,
    "llama3": LLAMA3,
    "alpaca": ALPACA,
    "mistral": MISTRAL,
    "exaone": EXAONE,
}


def template_text(value: str) -> str | None:
    """The template for a built-in name or a literal Jinja string; None for ``auto``."""
    if value == "auto":
        return None
    if value in BUILTIN:
        return BUILTIN[value]
    if "{" not in value or len(value) < 20:
        raise ValueError(
            f"chat_template {value!r} is neither a built-in name ({', '.join(BUILTIN)}, auto) "
            "nor a Jinja template"
        )
    return value
