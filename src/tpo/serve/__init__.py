"""Serving a thinking model: the user sees the response; the thought stays hidden.

stream.py       split an output into reasoning and content, whole or streamed
engine.py       chat messages -> prompt (thought prompt + prefill) -> streamed generation
server.py       `tpo serve`: OpenAI-compatible HTTP, thought in `reasoning`
chat.py         `tpo chat`: terminal chat, a thinking indicator or `--show-thoughts`
vllm_parser.py  vLLM reasoning-parser plugin (`tpo-generic`, `tpo-specific`) + chat template
"""
