"""Schemathesis hooks for the gateway's OpenAPI document (SCHEMATHESIS_HOOKS=schemathesis_hooks).

tus bodies are raw bytes under `application/offset+octet-stream`, a media type schemathesis
cannot make up on its own: they are generated as arbitrary bytes, as a fuzzer should send them.
"""

from hypothesis import strategies as st

import schemathesis

schemathesis.openapi.media_type(
    "application/offset+octet-stream", st.binary(max_size=4096)
)
