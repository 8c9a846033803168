// An OPC-UA server on another stack than asyncua (node-opcua), for plantwire's tests.
//
// Usage: node opcua_server.js PORT PKI_DIR. Endpoint opc.tcp://127.0.0.1:PORT/foreign, security
// None, and Basic256Sha256 SignAndEncrypt with strict certificate checks: an unknown client
// certificate is refused and filed under PKI_DIR/server/rejected (move it to
// PKI_DIR/server/trusted/certs to trust it). Prints "READY <port>" on stdout once it listens. Low operation limits (browse 4
// nodes, read 25 nodes per call) so a client that ignores them is refused (BadTooManyOperations).
//
// Address space under Objects, in namespace urn:foreign:plant (registered after the server's own,
// so its index is not 1), every identifier type a real PLC uses:
//   Line1/Press01: Temp    ns=k;s="DB1"."Temp"   Double, degC, EURange 0..150 (AnalogItem)
//                  Speed   ns=k;i=1001           Int32, rpm, EURange 0..3000
//                  Running ns=k;g=<guid>         Boolean
//                  Counter ns=k;b=<opaque>       UInt32
//                  Label   ns=k;s=Press01.Label  String (not a measurement: discovery skips it)
//   Line2/Oven01..Oven04: Zone01..Zone30  ns=k;i=<2000 + 100*oven + zone>  Float, degC, EURange 0..400
// Values change every 100 ms (functions of time).
"use strict";
const path = require("path");
const {
  OPCUAServer, Variant, DataType, standardUnits, OPCUACertificateManager, MessageSecurityMode, SecurityPolicy,
} = require("node-opcua");

const port = Number(process.argv[2]);
const pkiDir = process.argv[3];
const t0 = Date.now();
const tick = () => Math.floor((Date.now() - t0) / 100);
const GUID = "09087E75-8E5E-499B-954F-F2A9603DB28A";
const OPAQUE = "M/RbKBsRVkePCePcx24oRA==";

async function main() {
  const server = new OPCUAServer({
    port,
    hostname: "127.0.0.1",
    resourcePath: "/foreign",
    securityModes: [MessageSecurityMode.None, MessageSecurityMode.SignAndEncrypt],
    securityPolicies: [SecurityPolicy.None, SecurityPolicy.Basic256Sha256],
    allowAnonymous: true,
    serverCertificateManager: new OPCUACertificateManager({ rootFolder: path.join(pkiDir, "server"), automaticallyAcceptUnknownCertificate: false }),
    userCertificateManager: new OPCUACertificateManager({ rootFolder: path.join(pkiDir, "user") }),
    serverCapabilities: { operationLimits: { maxNodesPerBrowse: 4, maxNodesPerRead: 25, maxMonitoredItemsPerCall: 1000 } },
    buildInfo: { productName: "plantwire foreign test server" },
  });
  await server.initialize();
  const addressSpace = server.engine.addressSpace;
  addressSpace.registerNamespace("urn:foreign:other");
  const ns = addressSpace.registerNamespace("urn:foreign:plant");
  const k = ns.index;
  const objects = addressSpace.rootFolder.objects;
  const line1 = ns.addFolder(objects, { browseName: "Line1", nodeId: `ns=${k};s=Line1` });
  const press = ns.addFolder(line1, { browseName: "Press01", nodeId: `ns=${k};s=Line1.Press01` });
  const value = (dataType, f) => ({ get: () => new Variant({ dataType, value: f() }) });
  ns.addAnalogDataItem({
    minimumSamplingInterval: 100, organizedBy: press, browseName: "Temp", nodeId: `ns=${k};s="DB1"."Temp"`, dataType: "Double",
    engineeringUnitsRange: { low: 0, high: 150 }, engineeringUnits: standardUnits.degree_celsius,
    value: value(DataType.Double, () => 20 + (tick() % 50)),
  });
  ns.addAnalogDataItem({
    minimumSamplingInterval: 100, organizedBy: press, browseName: "Speed", nodeId: `ns=${k};i=1001`, dataType: "Int32",
    engineeringUnitsRange: { low: 0, high: 3000 }, engineeringUnits: standardUnits.revolutions_per_minute,
    value: value(DataType.Int32, () => 1000 + (tick() % 100)),
  });
  ns.addVariable({
    minimumSamplingInterval: 100, organizedBy: press, browseName: "Running", nodeId: `ns=${k};g=${GUID}`, dataType: "Boolean",
    value: value(DataType.Boolean, () => tick() % 2 === 0),
  });
  ns.addVariable({
    minimumSamplingInterval: 100, organizedBy: press, browseName: "Counter", nodeId: `ns=${k};b=${OPAQUE}`, dataType: "UInt32",
    value: value(DataType.UInt32, () => tick()),
  });
  ns.addVariable({
    minimumSamplingInterval: 100, organizedBy: press, browseName: "Label", nodeId: `ns=${k};s=Press01.Label`, dataType: "String",
    value: value(DataType.String, () => "press one"),
  });
  const line2 = ns.addFolder(objects, { browseName: "Line2", nodeId: `ns=${k};s=Line2` });
  for (let oven = 1; oven <= 4; oven++) {
    const name = `Oven0${oven}`;
    const folder = ns.addFolder(line2, { browseName: name, nodeId: `ns=${k};s=Line2.${name}` });
    for (let zone = 1; zone <= 30; zone++) {
      ns.addAnalogDataItem({
        minimumSamplingInterval: 100, organizedBy: folder, browseName: `Zone${String(zone).padStart(2, "0")}`,
        nodeId: `ns=${k};i=${2000 + 100 * oven + zone}`, dataType: "Float",
        engineeringUnitsRange: { low: 0, high: 400 }, engineeringUnits: standardUnits.degree_celsius,
        value: value(DataType.Float, () => 100 + oven * 10 + zone + (tick() % 7)),
      });
    }
  }
  await server.start();
  console.log(`READY ${port}`);
  process.on("SIGTERM", () => server.shutdown(0).then(() => process.exit(0)));
}

main().catch((err) => { console.error(err); process.exit(3); });
