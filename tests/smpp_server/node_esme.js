// A customer that is not ours, for the interoperability test: node-smpp 0.5.1 (npm `smpp`).
//   NODE_PATH=/tmp/smppserver-node/node_modules node tests/smpp_server/node_esme.js HOST PORT SYSTEM_ID PASSWORD N
// node-smpp has no window: it puts all N submit_sm in flight at once. Those refused with a
// "retry" status (ESME_RMSGQFUL, ESME_RTHROTTLED) are sent again 100 ms later, as a client
// should. Then one long UCS-2 text in message_payload. Prints one JSON line: the message ids,
// the statuses seen, and the receipts by receipted_message_id.
const smpp = require("smpp");
const [host, port, systemId, password, n] = process.argv.slice(2);
const result = { ids: [], statuses: {}, receipts: {}, errors: [] };
const wanted = Number(n) + 1;
const session = smpp.connect({ url: `smpp://${host}:${port}`, auto_enquire_link_period: 10000 });

let finished = false;
function finish() {
  if (finished) return;
  finished = true;
  session.close();
  // exit only once the whole line is written: a pipe takes it in 64 KiB pieces
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
}
setTimeout(() => { result.errors.push("timed out"); finish(); }, 60000);
session.on("error", (e) => { result.errors.push(String(e)); finish(); });
session.on("deliver_sm", (pdu) => {
  if (pdu.esm_class & 0x04) {
    const id = pdu.receipted_message_id || "";
    const text = Buffer.isBuffer(pdu.short_message) ? pdu.short_message.toString("latin1")
      : (pdu.short_message.message || String(pdu.short_message));
    result.receipts[id] = { text, state: pdu.message_state };
  }
  session.send(pdu.response());
  if (Object.keys(result.receipts).length >= wanted) finish();
});

function submit(fields) {
  session.submit_sm(fields, (pdu) => {
    result.statuses[pdu.command_status] = (result.statuses[pdu.command_status] || 0) + 1;
    if (pdu.command_status === 0) result.ids.push(pdu.message_id);
    else if (pdu.command_status === 0x14 || pdu.command_status === 0x58) {
      setTimeout(() => submit(fields), 100);
    } else result.errors.push(`submit refused ${pdu.command_status}`);
  });
}

session.bind_transceiver({ system_id: systemId, password }, (pdu) => {
  if (pdu.command_status !== 0) { result.errors.push(`bind ${pdu.command_status}`); finish(); }
  for (let i = 0; i < Number(n); i++) {
    submit({ source_addr: "NodeSMPP", source_addr_ton: 5, destination_addr: `38050${3000000 + i}`,
      dest_addr_ton: 1, dest_addr_npi: 1, short_message: `Hello from node ${i}`,
      registered_delivery: 1 });
  }
  submit({ source_addr: "NodeSMPP", source_addr_ton: 5, destination_addr: "380509999998",
    dest_addr_ton: 1, dest_addr_npi: 1, data_coding: 8,
    message_payload: Buffer.from("Привіт з Node! ".repeat(10), "utf16le").swap16(),
    registered_delivery: 1 });
});
