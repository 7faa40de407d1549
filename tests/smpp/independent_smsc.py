"""An SMSC that is not ours, for the interoperability test: smpp.twisted3's SMPPServerFactory.

Runs in its own virtualenv (smpp.twisted3 0.8 pulls Twisted, and is not a project dependency):
    python -m venv /tmp/twsmpp-venv && /tmp/twsmpp-venv/bin/pip install smpp.twisted3==0.8
    /tmp/twsmpp-venv/bin/python tests/smpp/independent_smsc.py SYSTEM_ID PASSWORD
It prints "listening on PORT", accepts submit_sm with a decimal message id (the other spelling
from our simulator's hex) and sends a receipt deliver_sm with the standard text and TLVs.
"""

import itertools
import sys

from smpp.pdu import pdu_types
from smpp.pdu.operations import DeliverSM
from smpp.twisted.config import SMPPServerConfig
from smpp.twisted.protocol import DataHandlerResponse
from smpp.twisted.server import IAuthenticatedSMPP, SMPPServerFactory
from twisted.cred import checkers, credentials, error, portal
from twisted.internet import defer, reactor
from zope.interface import implementer

MESSAGE_IDS = itertools.count(4_000_000_001)


@implementer(checkers.ICredentialsChecker)
class Checker:
    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, system_id, password):
        self.system_id, self.password = system_id, password

    def requestAvatarId(self, creds):
        if (creds.username, creds.password) == (self.system_id, self.password):
            return defer.succeed(creds.username)
        return defer.fail(error.UnauthorizedLogin())


@implementer(portal.IRealm)
class Realm:
    def requestAvatar(self, avatar_id, mind, *interfaces):
        return IAuthenticatedSMPP, avatar_id, lambda: None


def receipt(submit, message_id):
    text = (
        f"id:{message_id} sub:001 dlvrd:001 submit date:2401011200 done date:2401011201 "
        f"stat:DELIVRD err:000 text:hello"
    )
    return DeliverSM(
        service_type="",
        source_addr_ton=pdu_types.AddrTon.INTERNATIONAL,
        source_addr_npi=pdu_types.AddrNpi.ISDN,
        source_addr=submit.params["destination_addr"],
        dest_addr_ton=pdu_types.AddrTon.ALPHANUMERIC,
        dest_addr_npi=pdu_types.AddrNpi.UNKNOWN,
        destination_addr=submit.params["source_addr"],
        esm_class=pdu_types.EsmClass(
            pdu_types.EsmClassMode.DEFAULT, pdu_types.EsmClassType.SMSC_DELIVERY_RECEIPT
        ),
        protocol_id=0,
        priority_flag=pdu_types.PriorityFlag.LEVEL_0,
        registered_delivery=pdu_types.RegisteredDelivery(
            pdu_types.RegisteredDeliveryReceipt.NO_SMSC_DELIVERY_RECEIPT_REQUESTED
        ),
        replace_if_present_flag=pdu_types.ReplaceIfPresentFlag.DO_NOT_REPLACE,
        data_coding=pdu_types.DataCoding(),
        short_message=text.encode(),
        receipted_message_id=str(message_id),
        message_state=pdu_types.MessageState.DELIVERED,
    )


def on_message(system_id, protocol, pdu):
    message_id = next(MESSAGE_IDS)
    if pdu.commandId == pdu_types.CommandId.submit_sm:
        reactor.callLater(0.01, protocol.sendDataRequest, receipt(pdu, message_id))
    return DataHandlerResponse(pdu_types.CommandStatus.ESME_ROK, message_id=str(message_id))


def main():
    system_id, password = sys.argv[1], sys.argv[2]
    checker = Checker(system_id, password)
    config = SMPPServerConfig(msgHandler=on_message, systems={system_id: {"max_bindings": 4}})
    factory = SMPPServerFactory(config, auth_portal=portal.Portal(Realm(), [checker]))
    port = reactor.listenTCP(0, factory, interface="127.0.0.1")
    print(f"listening on {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
