// A hostile "gateway" for tests/luci.rs: answers nodeInfo on [::]:PORT with a name that is
// markup, and refuses every registration with an errorMsg that is markup too.
//   node fake-gateway.mjs PORT
import { createServer } from 'node:http';

const port = Number(process.argv[2] || 65533);
const HOSTILE = '<img src=x onerror="window.__xss=(window.__xss||0)+1">evil';
const answers = {
  nodeInfo: { success: true, name: HOSTILE, version: '0.1.0', gateway: true, methods: ['wireguard'],
    terms: { maxSubscribers: 10, subscribers: 0, leaseSeconds: 60, price: 0, bandwidthDown: 0, bandwidthUp: 0 },
    uplink: { healthy: true, checkedAgo: 1 }, gateways: [] },
  requestConnection: { success: false, errorMsg: HOSTILE + '<script>window.__xss=(window.__xss||0)+1</script>', temporaryError: false },
};
createServer((req, res) => {
  let body = '';
  req.on('data', (d) => { body += d; });
  req.on('end', () => {
    let msg = {};
    try { msg = JSON.parse(body); } catch (e) {}
    const result = answers[msg.method];
    const out = JSON.stringify(result ? { jsonrpc: '2.0', id: msg.id, result }
      : { jsonrpc: '2.0', id: msg.id, error: { code: -32601, message: 'unknown method' } });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(out), Connection: 'close' });
    res.end(out);
    console.log(msg.method);
  });
}).listen(port, '::');
