"""Built-in chat templates, selectable by name with ``chat_template:`` in a config."""

from __future__ import annotations

CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + "
    "message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The named templates render conversations exactly as mergekit 0.1.5's built-in templates of the
# same names do (its whitespace included: a config that names one gives the model mergekit
# would give it); tests/tokenizer/test_chat_templates.py renders both and compares.
LLAMA3 = (
    "{% for message in messages %}{% if loop.first %}{{ bos_token }}{% endif %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + "
    "message['content'] | trim + '<|eot_id|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
    "{% endif %}"
)
ALPACA = (
    "{% set system = messages | selectattr('role', 'equalto', 'system') | list %}"
    "{{ (system | last)['content'] | trim if system else '' }}{{ '\\n\\n' }}"
    "{% set heads = {'user': '### Instruction:\\n', 'assistant': '### Response:\\n', "
    "'user_context': '### Input:\\n'} %}"
    "{% for message in messages %}{% if message['role'] in heads %}"
    "{{ heads[message['role']] + message['content'] | trim }}"
    "{% if not loop.last %}{{ '\\n\\n' }}{% endif %}{% endif %}{% endfor %}"
    "{% if add_generation_prompt and messages[-1]['role'] != 'assistant' %}"
    "{{ '### Response:\\n' }}{% endif %}"
)
MISTRAL = (
    "{% set has_system = messages[0]['role'] == 'system' %}"
    "{% set turns = messages[1:] if has_system else messages %}"
    "{{ bos_token }}{% for message in turns %}"
    "{% if (message['role'] == 'user') != (loop.index0 is even) %}"
    "{{ raise_exception('mistral template: after an optional first system message, the roles "
    "must alternate user, assistant, user, ...') }}{% endif %}"
    "{% if message['role'] == 'user' %}{{ ' [INST] ' }}"
    "{% if loop.first and has_system %}{{ messages[0]['content'] + '\\n\\n' }}{% endif %}"
    "{{ message['content'] + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] + eos_token }}"
    "{% else %}{{ raise_exception('mistral template: only user and assistant messages (and a "
    "first system message) are supported') }}{% endif %}{% endfor %}"
)
EXAONE = (
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "{{ '        [|system|][|endofturn|]\\n\\n' }}{% endif %}"
    "{{ '    [|' + message['role'] + '|]' + message['content'] + '\\n' }}"
    "{{ '        \\n\\n' if message['role'] == 'user' else '        [|endofturn|]\\n\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '    [|assistant|]\\n' }}{% endif %}"
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
