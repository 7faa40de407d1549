"""Inbound SMS (MO): reassembly, decoding, routing to an account, opt-outs, callbacks.

| module | what it holds |
| --- | --- |
| `decoding.py` | data_coding -> text (pure) |
| `concat.py` | UDH (IEI 0x00 / 0x08) and SAR TLVs: which part of which message (pure) |
| `keywords.py` | routing keywords, stop/start keywords (pure) |
| `repository.py` | the SQL: owned numbers, fragments, inbound messages, opt-outs |
| `service.py` | one carrier deliver_sm in: store, reassemble, route, opt-out, `deliver_inbound` |
| `optouts.py` | the send path's check (one indexed lookup; set-based for campaigns) |
| `endpoints.py` | GET /v1/inbound, GET/POST/DELETE /v1/opt-outs |
"""
