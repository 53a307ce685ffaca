# ruff: noqa: E501  (recorded streams stay one frame per line, byte for byte)
"""Streams in each provider's documented wire format, byte for byte.

Every one answers the same prompt with the reasoning "The user greets me." and the answer
"Hello there!", and carries usage, so the tests compare one normalized result across vendors.
``cut_before`` gives a stream's bytes up to the middle of a frame, as a connection that dropped
mid-answer leaves them.
"""

from __future__ import annotations

REASONING = "The user greets me."
ANSWER = "Hello there!"


def cut_before(stream: bytes, marker: bytes) -> bytes:
    """The stream up to (not including) ``marker``: after some text, inside a frame."""
    return stream[: stream.index(marker)]


# OpenAI-compatible Chat Completions, here as DeepSeek sends it (``reasoning_content``), with
# the usage chunk that ``stream_options.include_usage`` adds and a keep-alive comment.
OPENAI_CHAT = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1731000000,"model":"deepseek-reasoner","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"role":"assistant","content":null,"reasoning_content":""},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1731000000,"model":"deepseek-reasoner","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":null,"reasoning_content":"The user"},"logprobs":null,"finish_reason":null}]}\n\n'
    b": keep-alive\n\n"
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1731000000,"model":"deepseek-reasoner","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":null,"reasoning_content":" greets me."},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1731000000,"model":"deepseek-reasoner","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"Hello","reasoning_content":null},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1731000000,"model":"deepseek-reasoner","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":" there!","reasoning_content":null},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1731000000,"model":"deepseek-reasoner","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1731000000,"model":"deepseek-reasoner","system_fingerprint":"fp_1","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":9,"total_tokens":21,"completion_tokens_details":{"reasoning_tokens":5}}}\n\n'
    b"data: [DONE]\n\n"
)
OPENAI_CHAT_CUT = cut_before(OPENAI_CHAT, b'" there!"')
OPENAI_CHAT_ERROR = (
    b'data: {"id":"chatcmpl-1","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":"Hello"},"finish_reason":null}]}\n\n'
    b'data: {"error":{"message":"Rate limit reached for gpt-4o-mini","type":"rate_limit_exceeded","param":null,"code":"rate_limit_exceeded"}}\n\n'
)
# vLLM and Ollama's /v1 name the reasoning field ``reasoning``.
OPENAI_CHAT_VLLM = (
    b'data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1731000000,"model":"qwen3","choices":[{"index":0,"delta":{"role":"assistant","content":"","reasoning":"The user greets me."},"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-2","object":"chat.completion.chunk","created":1731000000,"model":"qwen3","choices":[{"index":0,"delta":{"content":"Hello there!"},"finish_reason":"length"}]}\n\n'
    b"data: [DONE]\n\n"
)

OPENAI_RESPONSES = (
    b"event: response.created\n"
    b'data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","created_at":1731000000,"status":"in_progress","model":"o4-mini","output":[],"usage":null}}\n\n'
    b"event: response.in_progress\n"
    b'data: {"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1","object":"response","created_at":1731000000,"status":"in_progress","model":"o4-mini","output":[],"usage":null}}\n\n'
    b"event: response.output_item.added\n"
    b'data: {"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"id":"rs_1","type":"reasoning","summary":[]}}\n\n'
    b"event: response.reasoning_summary_part.added\n"
    b'data: {"type":"response.reasoning_summary_part.added","sequence_number":3,"item_id":"rs_1","output_index":0,"summary_index":0,"part":{"type":"summary_text","text":""}}\n\n'
    b"event: response.reasoning_summary_text.delta\n"
    b'data: {"type":"response.reasoning_summary_text.delta","sequence_number":4,"item_id":"rs_1","output_index":0,"summary_index":0,"delta":"The user"}\n\n'
    b"event: response.reasoning_summary_text.delta\n"
    b'data: {"type":"response.reasoning_summary_text.delta","sequence_number":5,"item_id":"rs_1","output_index":0,"summary_index":0,"delta":" greets me."}\n\n'
    b"event: response.reasoning_summary_text.done\n"
    b'data: {"type":"response.reasoning_summary_text.done","sequence_number":6,"item_id":"rs_1","output_index":0,"summary_index":0,"text":"The user greets me."}\n\n'
    b"event: response.output_item.added\n"
    b'data: {"type":"response.output_item.added","sequence_number":7,"output_index":1,"item":{"id":"msg_1","type":"message","status":"in_progress","content":[],"role":"assistant"}}\n\n'
    b"event: response.content_part.added\n"
    b'data: {"type":"response.content_part.added","sequence_number":8,"item_id":"msg_1","output_index":1,"content_index":0,"part":{"type":"output_text","annotations":[],"logprobs":[],"text":""}}\n\n'
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":9,"item_id":"msg_1","output_index":1,"content_index":0,"delta":"Hello","logprobs":[]}\n\n'
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":10,"item_id":"msg_1","output_index":1,"content_index":0,"delta":" there!","logprobs":[]}\n\n'
    b"event: response.output_text.done\n"
    b'data: {"type":"response.output_text.done","sequence_number":11,"item_id":"msg_1","output_index":1,"content_index":0,"text":"Hello there!","logprobs":[]}\n\n'
    b"event: response.completed\n"
    b'data: {"type":"response.completed","sequence_number":12,"response":{"id":"resp_1","object":"response","created_at":1731000000,"status":"completed","model":"o4-mini","output":[{"id":"rs_1","type":"reasoning","summary":[{"type":"summary_text","text":"The user greets me."}]},{"id":"msg_1","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","annotations":[],"text":"Hello there!"}]}],"usage":{"input_tokens":12,"input_tokens_details":{"cached_tokens":0},"output_tokens":30,"output_tokens_details":{"reasoning_tokens":20},"total_tokens":42}}}\n\n'
)
OPENAI_RESPONSES_CUT = cut_before(OPENAI_RESPONSES, b'" there!"')
OPENAI_RESPONSES_FAILED = (
    b"event: response.created\n"
    b'data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_2","object":"response","status":"in_progress","output":[]}}\n\n'
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello"}\n\n'
    b"event: response.failed\n"
    b'data: {"type":"response.failed","sequence_number":2,"response":{"id":"resp_2","object":"response","status":"failed","error":{"code":"server_error","message":"The model failed to generate a response."},"output":[]}}\n\n'
)
OPENAI_RESPONSES_INCOMPLETE = (
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":1,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hello"}\n\n'
    b"event: response.incomplete\n"
    b'data: {"type":"response.incomplete","sequence_number":2,"response":{"id":"resp_3","object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":12,"output_tokens":1,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":13}}}\n\n'
)

ANTHROPIC = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}\n\n'
    b"event: ping\n"
    b'data: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"The user"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":" greets me."}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hello"}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":" there!"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":1}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":30}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)
ANTHROPIC_CUT = cut_before(ANTHROPIC, b'" there!"')
ANTHROPIC_OVERLOADED = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_2","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":12,"output_tokens":1}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}\n\n'
    b"event: error\n"
    b'data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
)

# Gemini's SSE frames end with CRLF CRLF.
GEMINI = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "The user greets me.","thought": true}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 12,"totalTokenCount": 12,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 12}]},"modelVersion": "gemini-2.5-flash","responseId": "r1"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": "Hello"}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 12,"totalTokenCount": 38,"thoughtsTokenCount": 25},"modelVersion": "gemini-2.5-flash","responseId": "r1"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"text": " there!"}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 12,"candidatesTokenCount": 4,"totalTokenCount": 41,"promptTokensDetails": [{"modality": "TEXT","tokenCount": 12}],"thoughtsTokenCount": 25},"modelVersion": "gemini-2.5-flash","responseId": "r1"}\r\n\r\n'
)
GEMINI_CUT = cut_before(GEMINI, b'" there!"')
GEMINI_ERROR = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "Hello"}],"role": "model"},"index": 0}],"modelVersion": "gemini-2.5-flash"}\r\n\r\n'
    b'data: {"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}}\r\n\r\n'
)
# An error after the stream began, as Google sends it: a bare (pretty-printed) JSON object, no
# ``data:`` line, then the end of the body.
GEMINI_RAW_ERROR = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "Hello"}],"role": "model"},"index": 0}],"modelVersion": "gemini-2.5-flash"}\r\n\r\n'
    b'{\n  "error": {\n    "code": 503,\n    "message": "The model is overloaded. Please try again later.",\n    "status": "UNAVAILABLE"\n  }\n}\n'
)

OLLAMA = (
    b'{"model":"qwen3","created_at":"2025-05-01T10:00:00.000000Z","message":{"role":"assistant","content":"","thinking":"The user"},"done":false}\n'
    b'{"model":"qwen3","created_at":"2025-05-01T10:00:00.100000Z","message":{"role":"assistant","content":"","thinking":" greets me."},"done":false}\n'
    b'{"model":"qwen3","created_at":"2025-05-01T10:00:00.200000Z","message":{"role":"assistant","content":"Hello"},"done":false}\n'
    b'{"model":"qwen3","created_at":"2025-05-01T10:00:00.300000Z","message":{"role":"assistant","content":" there!"},"done":false}\n'
    b'{"model":"qwen3","created_at":"2025-05-01T10:00:00.400000Z","message":{"role":"assistant","content":""},"done_reason":"stop","done":true,"total_duration":400000000,"load_duration":1000000,"prompt_eval_count":12,"prompt_eval_duration":10000000,"eval_count":9,"eval_duration":300000000}\n'
)
OLLAMA_CUT = cut_before(OLLAMA, b'" there!"')
OLLAMA_ERROR = (
    b'{"model":"qwen3","created_at":"2025-05-01T10:00:00.000000Z","message":{"role":"assistant","content":"Hello"},"done":false}\n'
    b'{"error":"an error was encountered while running the model: unexpected EOF"}\n'
)

# Generic over SSE: text-generation-inference's ``generate_stream`` events, where the last
# event carries ``details`` (the end condition) and its own token.
GENERIC_SSE = (
    b'data:{"index":1,"token":{"id":1,"text":"Hello","logprob":-0.1,"special":false},"generated_text":null,"details":null}\n\n'
    b'data:{"index":2,"token":{"id":2,"text":" there","logprob":-0.1,"special":false},"generated_text":null,"details":null}\n\n'
    b'data:{"index":3,"token":{"id":3,"text":"!","logprob":-0.1,"special":false},"generated_text":"Hello there!","details":{"finish_reason":"eos_token","generated_tokens":3,"seed":null}}\n\n'
)
GENERIC_SSE_CUT = cut_before(GENERIC_SSE, b'" there"')
# Generic over NDJSON: a home-grown format, ended by ``"status": "done"``.
GENERIC_NDJSON = (
    b'{"delta":{"reasoning":"The user greets me."}}\n'
    b'{"delta":{"answer":"Hello"}}\n'
    b'{"delta":{"answer":" there!"}}\n'
    b'{"status":"done","usage":{"in":12,"out":9}}\n'
)
GENERIC_NDJSON_CUT = cut_before(GENERIC_NDJSON, b'" there!"')

# Tool calls, when the request carries ``tools``: each vendor says "Let me check." and then
# calls get_weather with {"city": "Paris"}, its arguments streamed in pieces where the vendor
# streams them. OpenAI's Chat Completions also makes a second call in parallel (index 1).
TOOL_TEXT = "Let me check."
TOOL_ARGUMENTS = '{"city": "Paris"}'

OPENAI_CHAT_TOOLS = (
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini","system_fingerprint":"fp_3","choices":[{"index":0,"delta":{"role":"assistant","content":"Let me check.","refusal":null},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini","system_fingerprint":"fp_3","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_Vx8mQ2","type":"function","function":{"name":"get_weather","arguments":""}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini","system_fingerprint":"fp_3","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\""}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini","system_fingerprint":"fp_3","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":": \\"Paris\\"}"}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini","system_fingerprint":"fp_3","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"id":"call_Tq4nB7","type":"function","function":{"name":"get_time","arguments":""}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini","system_fingerprint":"fp_3","choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]},"logprobs":null,"finish_reason":null}]}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini","system_fingerprint":"fp_3","choices":[{"index":0,"delta":{},"logprobs":null,"finish_reason":"tool_calls"}],"usage":null}\n\n'
    b'data: {"id":"chatcmpl-3","object":"chat.completion.chunk","created":1731000000,"model":"gpt-4o-mini","system_fingerprint":"fp_3","choices":[],"usage":{"prompt_tokens":40,"completion_tokens":18,"total_tokens":58}}\n\n'
    b"data: [DONE]\n\n"
)

OPENAI_RESPONSES_TOOLS = (
    b"event: response.created\n"
    b'data: {"type":"response.created","sequence_number":0,"response":{"id":"resp_4","object":"response","created_at":1731000000,"status":"in_progress","model":"gpt-4.1","output":[],"usage":null}}\n\n'
    b"event: response.output_item.added\n"
    b'data: {"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"id":"msg_4","type":"message","status":"in_progress","content":[],"role":"assistant"}}\n\n'
    b"event: response.output_text.delta\n"
    b'data: {"type":"response.output_text.delta","sequence_number":2,"item_id":"msg_4","output_index":0,"content_index":0,"delta":"Let me check.","logprobs":[]}\n\n'
    b"event: response.output_item.done\n"
    b'data: {"type":"response.output_item.done","sequence_number":3,"output_index":0,"item":{"id":"msg_4","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","annotations":[],"text":"Let me check."}]}}\n\n'
    b"event: response.output_item.added\n"
    b'data: {"type":"response.output_item.added","sequence_number":4,"output_index":1,"item":{"id":"fc_4","type":"function_call","status":"in_progress","arguments":"","call_id":"call_Vx8mQ2","name":"get_weather"}}\n\n'
    b"event: response.function_call_arguments.delta\n"
    b'data: {"type":"response.function_call_arguments.delta","sequence_number":5,"item_id":"fc_4","output_index":1,"delta":"{\\"city\\""}\n\n'
    b"event: response.function_call_arguments.delta\n"
    b'data: {"type":"response.function_call_arguments.delta","sequence_number":6,"item_id":"fc_4","output_index":1,"delta":": \\"Paris\\"}"}\n\n'
    b"event: response.function_call_arguments.done\n"
    b'data: {"type":"response.function_call_arguments.done","sequence_number":7,"item_id":"fc_4","output_index":1,"arguments":"{\\"city\\": \\"Paris\\"}"}\n\n'
    b"event: response.output_item.done\n"
    b'data: {"type":"response.output_item.done","sequence_number":8,"output_index":1,"item":{"id":"fc_4","type":"function_call","status":"completed","arguments":"{\\"city\\": \\"Paris\\"}","call_id":"call_Vx8mQ2","name":"get_weather"}}\n\n'
    b"event: response.completed\n"
    b'data: {"type":"response.completed","sequence_number":9,"response":{"id":"resp_4","object":"response","created_at":1731000000,"status":"completed","model":"gpt-4.1","output":[{"id":"msg_4","type":"message","status":"completed","role":"assistant","content":[{"type":"output_text","annotations":[],"text":"Let me check."}]},{"id":"fc_4","type":"function_call","status":"completed","arguments":"{\\"city\\": \\"Paris\\"}","call_id":"call_Vx8mQ2","name":"get_weather"}],"usage":{"input_tokens":40,"input_tokens_details":{"cached_tokens":0},"output_tokens":18,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":58}}}\n\n'
)

ANTHROPIC_TOOLS = (
    b"event: message_start\n"
    b'data: {"type":"message_start","message":{"id":"msg_5","type":"message","role":"assistant","content":[],"model":"claude-sonnet-4-5","stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":40,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":1}}}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Let me check."}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":0}\n\n'
    b"event: content_block_start\n"
    b'data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"toolu_01Vx8mQ2","name":"get_weather","input":{}}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":""}}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\\"city\\""}}\n\n'
    b"event: ping\n"
    b'data: {"type": "ping"}\n\n'
    b"event: content_block_delta\n"
    b'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":": \\"Paris\\"}"}}\n\n'
    b"event: content_block_stop\n"
    b'data: {"type":"content_block_stop","index":1}\n\n'
    b"event: message_delta\n"
    b'data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":18}}\n\n'
    b"event: message_stop\n"
    b'data: {"type":"message_stop"}\n\n'
)

# Gemini sends a call whole, in one part (with the thought signature it wants back).
GEMINI_TOOLS = (
    b'data: {"candidates": [{"content": {"parts": [{"text": "Let me check."}],"role": "model"},"index": 0}],"usageMetadata": {"promptTokenCount": 40,"totalTokenCount": 40},"modelVersion": "gemini-2.5-flash","responseId": "r2"}\r\n\r\n'
    b'data: {"candidates": [{"content": {"parts": [{"functionCall": {"name": "get_weather","args": {"city": "Paris"}},"thoughtSignature": "CiQBVKhc7r9xkqZ1"}],"role": "model"},"finishReason": "STOP","index": 0}],"usageMetadata": {"promptTokenCount": 40,"candidatesTokenCount": 18,"totalTokenCount": 58},"modelVersion": "gemini-2.5-flash","responseId": "r2"}\r\n\r\n'
)
