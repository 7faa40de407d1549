"""A customer that is not ours, for the interoperability test: smpp.twisted3's ESME client.

Runs in its own virtualenv (see tests/smpp/independent_smsc.py):
    /tmp/twsmpp-venv/bin/python tests/smpp_server/twisted_esme.py HOST PORT SYSTEM_ID PASSWORD N
Binds as a transceiver, submits N short GSM-7 messages and one UCS-2 message, waits for a
receipt for each, unbinds, and prints one JSON line: the message ids of the submit_sm_resp and,
by receipted_message_id, the receipt text and message_state it parsed.
"""

import json
import sys
import types

# smpp.twisted.client imports pyOpenSSL for its TLS option, which this test does not use and
# the peer's virtualenv does not have: plain stand-ins let it import
if "OpenSSL" not in sys.modules:
    try:
        import OpenSSL  # noqa: F401
    except ImportError:
        _openssl = types.ModuleType("OpenSSL")
        _openssl.SSL = types.SimpleNamespace(SSLv23_METHOD=None)
        sys.modules["OpenSSL"] = _openssl
        _ssl = types.ModuleType("twisted.internet.ssl")
        _ssl.ClientContextFactory = object
        sys.modules["twisted.internet.ssl"] = _ssl
        import twisted.internet

        twisted.internet.ssl = _ssl

from smpp.pdu import pdu_types
from smpp.pdu.operations import SubmitSM
from smpp.twisted.client import SMPPClientTransceiver
from smpp.twisted.config import SMPPClientConfig
from smpp.twisted.protocol import DataHandlerResponse
from twisted.internet import defer, reactor

RESULT = {"ids": [], "receipts": {}, "errors": []}
WANTED = {"count": 0}
DONE = defer.Deferred()


def on_deliver(smpp, pdu):
    params = pdu.params
    message_id = params.get("receipted_message_id")
    if message_id is not None:
        if isinstance(message_id, bytes):
            message_id = message_id.decode()
        state = params.get("message_state")
        RESULT["receipts"][message_id] = {
            "text": params["short_message"].decode("ascii", "replace"),
            "state": getattr(state, "name", str(state)),
        }
        if len(RESULT["receipts"]) >= WANTED["count"] and not DONE.called:
            DONE.callback(None)
    return DataHandlerResponse(pdu_types.CommandStatus.ESME_ROK)


def submit(smpp, text, data_coding, to):
    return smpp.sendDataRequest(SubmitSM(
        source_addr_ton=pdu_types.AddrTon.ALPHANUMERIC,
        source_addr_npi=pdu_types.AddrNpi.UNKNOWN,
        source_addr="Twisted",
        dest_addr_ton=pdu_types.AddrTon.INTERNATIONAL,
        dest_addr_npi=pdu_types.AddrNpi.ISDN,
        destination_addr=to,
        short_message=text,
        data_coding=data_coding,
        registered_delivery=pdu_types.RegisteredDelivery(
            pdu_types.RegisteredDeliveryReceipt.SMSC_DELIVERY_RECEIPT_REQUESTED),
    ))


@defer.inlineCallbacks
def run(host, port, system_id, password, n):
    config = SMPPClientConfig(host=host, port=port, username=system_id, password=password,
                              enquireLinkTimerSecs=30, responseTimerSecs=10)
    try:
        smpp = yield SMPPClientTransceiver(config, on_deliver).connectAndBind()
        sends = [submit(smpp, f"Hello from Twisted {i}".encode(), pdu_types.DataCoding(),
                        f"38050{2000000 + i}") for i in range(n)]
        sends.append(submit(smpp, "Привіт з Twisted".encode("utf-16-be"),
                            pdu_types.DataCoding(
                                schemeData=pdu_types.DataCodingDefault.UCS2),
                            "380509999999"))
        WANTED["count"] = len(sends)
        for response in (yield defer.gatherResults(sends)):
            message_id = response.response.params["message_id"]
            RESULT["ids"].append(message_id.decode() if isinstance(message_id, bytes)
                                 else message_id)
        yield DONE
        yield smpp.unbindAndDisconnect()
    except Exception as exc:  # reported to the test, which fails on it
        RESULT["errors"].append(repr(exc))
    finally:
        print(json.dumps(RESULT), flush=True)
        reactor.stop()


def main():
    host, port, system_id, password, n = sys.argv[1:6]
    reactor.callWhenRunning(run, host, int(port), system_id, password, int(n))
    reactor.callLater(60, lambda: reactor.stop() if reactor.running else None)
    reactor.run()


if __name__ == "__main__":
    main()
