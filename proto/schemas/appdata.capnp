@0xac59253604b9a388;
# quicnprotochat application-data records (docs/PROTOCOL.md, "Application data").
#
# One AppRecord is the plaintext of one MLS application message: the node never
# sees any of it. Evolution rules: fields and union members are only ever
# added (never renumbered or removed); a reader that meets a union member it
# does not know shows a placeholder ("a newer kind of message") and keeps going.

struct AppRecord {
  version @0 :UInt16;
  # Record format version (1). Readers accept any version; it names the
  # writer's schema generation for diagnostics.

  body :union {
    text @1 :ChatText;
    meta @2 :Meta;
    hello @3 :Hello;
    reaction @4 :Reaction;
    edit @5 :Edit;
    delete @6 :Delete;
    receipt @7 :Receipt;
    typing @8 :Void;
    topic @9 :Topic;
    deviceCert @10 :DeviceCert;
  }
}

struct ChatText {
  nonce @0 :Data;
  # 16 random bytes chosen by the author; the message id is
  # SHA-256("qpc msg id v1" || author signature key || nonce)[:16].
  text @1 :Text;
  ts @2 :Int64;
  # Author's clock, Unix ms.
  replyTo @3 :Data;
  # Message id (16 bytes) of the parent, or empty.
  action @4 :Bool;
  # An action ("/me waves"): rendered as "* alice waves".
}

struct AccessKey {
  device @0 :Data;
  key @1 :Data;
}

struct Meta {
  name @0 :Text;
  kind @1 :Text;
  # "group" or "dm".
  accessKeys @2 :List(AccessKey);
}

struct Hello {
  accessKey @0 :Data;
}

struct Reaction {
  target @0 :Data;
  # Message id.
  emoji @1 :Text;
  remove @2 :Bool;
}

struct Edit {
  target @0 :Data;
  text @1 :Text;
  ts @2 :Int64;
}

struct Delete {
  target @0 :Data;
}

struct Receipt {
  upTo @0 :Data;
  # Id of the newest message the reader has seen in the channel.
}

struct Topic {
  text @0 :Text;
}

struct DeviceCert {
  # Sent by the device that linked a new device of the same account, to every
  # channel it added it to (docs/PROTOCOL.md "Linked devices"). The sender
  # (MLS-authenticated) is the issuer; its account is the account certified.
  device @0 :Data;
  # The new device's id (Ed25519 public key).
  issuedMs @1 :Int64;
  signature @2 :Data;
  # Ed25519 by the issuer over "qpc-device-cert-v1\0" || user || "\0" ||
  # device || issuedMs (u64 big-endian).
}
