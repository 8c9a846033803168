// A Modbus TCP server on another stack than pymodbus (modbus-serial), for plantwire's tests.
//
// Usage: node modbus_server.js PORT [UNIT]. Serves one unit id (default 1); like a real
// modbus-serial server it gives no answer at all to another unit id. Prints "READY <port>" on
// stdout once it listens. The map has answering ranges and exception (02, illegal data address)
// ranges, so discovery has something to find:
//   holding  0..99 and 120..129 answer; holding register n holds n * 10 (constant)
//   input    0..49 answer; input register n counts up by one every 100 ms from n
//   coils    0..15 answer (even ones set); discrete inputs: none (every read is exception 02)
"use strict";
const ModbusRTU = require("modbus-serial");

const port = Number(process.argv[2]);
const unit = Number(process.argv[3] || 1);
const started = Date.now();

function inRanges(addr, length, ranges) {
  return ranges.some(([lo, hi]) => addr >= lo && addr + length - 1 <= hi);
}
function illegal() {
  return { modbusErrorCode: 0x02, msg: "Illegal data address" };
}
const HOLDING = [[0, 99], [120, 129]];
const INPUT = [[0, 49]];
const COILS = [[0, 15]];

const vector = {
  getMultipleHoldingRegisters(addr, length) {
    if (!inRanges(addr, length, HOLDING)) throw illegal();
    return Array.from({ length }, (_, k) => ((addr + k) * 10) & 0xffff);
  },
  getHoldingRegister(addr) {
    if (!inRanges(addr, 1, HOLDING)) throw illegal();
    return (addr * 10) & 0xffff;
  },
  getMultipleInputRegisters(addr, length) {
    if (!inRanges(addr, length, INPUT)) throw illegal();
    const tick = Math.floor((Date.now() - started) / 100);
    return Array.from({ length }, (_, k) => (addr + k + tick) & 0xffff);
  },
  getInputRegister(addr) {
    if (!inRanges(addr, 1, INPUT)) throw illegal();
    return (addr + Math.floor((Date.now() - started) / 100)) & 0xffff;
  },
  getCoil(addr) {
    if (!inRanges(addr, 1, COILS)) throw illegal();
    return addr % 2 === 0;
  },
  getDiscreteInput() {
    throw illegal();
  },
};

const server = new ModbusRTU.ServerTCP(vector, { host: "127.0.0.1", port, unitID: unit });
server.on("initialized", () => console.log(`READY ${port}`));
server.on("socketError", () => {});
server.on("serverError", (err) => { console.error(`serverError ${err}`); process.exit(3); });
process.on("SIGTERM", () => server.close(() => process.exit(0)));
