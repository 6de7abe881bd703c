// A pinlife client in Node.js: enroll a card, verify its user-certificate
// PIN (a wrong one, then the right one) and read its status. Each answer is
// printed as one JSON line; a gRPC error is `error: CODE: details` on stderr
// and exit 1.
//
//   node client.js [ADDRESS] [CARD]
//
// ADDRESS defaults to $PINLIFE_LISTEN, else 127.0.0.1:50051 (`make run`);
// CARD to a random card-node-xxxx. Plain text (development mode) unless
// PINLIFE_CA, PINLIFE_CERT and PINLIFE_CLIENT_KEY name PEM files: then mutual
// TLS, and the certificate's common name is the terminal.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

// The service's own .proto files, loaded at run time (no code generation).
// keepCase: field names as in the .proto (card_id, not cardId); longs as
// strings (uint64 stream_version); enums by name; unset fields as defaults.
const definition = protoLoader.loadSync(
  ['pinlife/v1/pin_service.proto', 'pinlife/v1/counter_service.proto'],
  {
    includeDirs: [path.join(__dirname, '..', '..', 'protos')],
    keepCase: true, longs: String, enums: String, defaults: true,
  },
);
const v1 = grpc.loadPackageDefinition(definition).pinlife.v1;

const address = process.argv[2] || process.env.PINLIFE_LISTEN || '127.0.0.1:50051';
const cardId = process.argv[3] || `card-node-${crypto.randomBytes(2).toString('hex')}`;

// Mutual TLS when the PEM files are given; else plain text, where the
// terminal names itself in the x-pinlife-terminal header.
function connect() {
  const { PINLIFE_CA: ca, PINLIFE_CERT: cert, PINLIFE_CLIENT_KEY: key } = process.env;
  const metadata = new grpc.Metadata();
  if (!ca && !cert && !key) {
    metadata.set('x-pinlife-terminal', 'node-example');
    return { credentials: grpc.credentials.createInsecure(), metadata };
  }
  if (!ca || !cert || !key) throw new Error('mutual TLS needs PINLIFE_CA, PINLIFE_CERT and PINLIFE_CLIENT_KEY');
  const pem = (file) => fs.readFileSync(file);
  return { credentials: grpc.credentials.createSsl(pem(ca), pem(key), pem(cert)), metadata };
}

async function main() {
  const { credentials, metadata } = connect();
  const pins = new v1.PinService(address, credentials);
  const counter = new v1.CounterService(address, credentials);

  // One unary call as a promise, with a 10 s deadline; its answer as one JSON line.
  const call = (client, method, request) => new Promise((resolve, reject) => {
    const options = { deadline: new Date(Date.now() + 10_000) };
    client[method](request, metadata, options, (err, answer) => (err ? reject(err) : resolve(answer)));
  }).then((answer) => console.log(JSON.stringify(answer)));

  try {
    // A counter enrolls the card with the PINs set at issuance. Every mutating
    // request carries a fresh request_id: a retry with the same id is answered
    // with the first answer and recorded once.
    await call(counter, 'EnrollCard', {
      request_id: crypto.randomUUID(),
      card_id: cardId,
      pins: [
        { pin_type: 'PIN_TYPE_USER_CERTIFICATE', pin: '1234' },
        { pin_type: 'PIN_TYPE_SIGNATURE', pin: 'abc123' },
      ],
    });

    // A wrong PIN is an answer (CHECK_RESULT_WRONG_PIN, with the tries left),
    // not an error; the right one resets the count.
    for (const pin of ['9999', '1234']) {
      await call(pins, 'VerifyPin', {
        request_id: crypto.randomUUID(),
        card_id: cardId,
        pin_type: 'PIN_TYPE_USER_CERTIFICATE',
        pin,
      });
    }

    // Reading the status costs no try and records nothing (no pin_type: every PIN).
    await call(pins, 'GetPinStatus', { card_id: cardId });
  } finally {
    pins.close();
    counter.close();
  }
}

main().catch((err) => {
  // A gRPC error has a numeric code: print its name, as the other clients do.
  const code = typeof err.code === 'number' ? grpc.status[err.code] : 'CLIENT';
  console.error(`error: ${code}: ${err.details ?? err.message}`);
  process.exitCode = 1;
});
