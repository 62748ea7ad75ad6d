# quicnprotochat node protocol (ALPN "qpc/1").
#
# Wire use (see docs/PROTOCOL.md): every call is one client-initiated QUIC
# bidirectional stream. The client writes one `Request` message in standard
# stream framing (segment table, unpacked) and FINs; the node answers with one
# `Response` and FINs. The streaming call `fetchWait` answers with a sequence
# of `Response` messages on the same stream.
#
# Compatibility rules: never renumber or reuse an ordinal; add new methods at
# the end of the unions and of `NodeService`; `ErrorCode` ordinals equal
# `proto.errors.ErrorCode`.
#
# This file is the single source of the RPC surface: `NodeService` below is
# the method table. `python -m proto.rpc_api_gen` derives `proto/rpc_api.py`
# (method table, node handler protocol, client stubs) from it; a test fails
# when that file is stale (docs/PROTOCOL.md, "Adding a method").

@0xdab15bdf666e7d3a;

annotation streaming @0xdd068d811adf0304 (method) :Void;
# The node answers the method with a sequence of results on the call's stream
# (then FIN) instead of one result.

# ------------------------------------------------------------------ shared types

struct Envelope {
  # One message in a device inbox.
  seq @0 :UInt64;          # per-inbox delivery sequence number
  channelId @1 :Data;      # opaque channel (MLS group) id, 1-64 bytes
  data @2 :Data;           # sealed payload
}

struct Device {
  deviceId @0 :Data;       # Ed25519 identity public key (32 bytes)
  hybridKey @1 :Data;      # X-Wing public key (1216 bytes)
  signature @2 :Data;      # Ed25519 by deviceId over "qpc-device-v1" || hybridKey
}

struct Recipient {
  # One fan-out entry of enqueueCommit.
  recipient @0 :Data;      # recipient deviceId
  payload @1 :Data;
}

enum ErrorCode {
  internal @0;
  badRequest @1;
  unauthenticated @2;
  permissionDenied @3;
  notFound @4;
  alreadyExists @5;
  rateLimited @6;
  queueFull @7;
  staleEpoch @8;
  payloadTooLarge @9;
  invalidSignature @10;
  unavailable @11;
  cancelled @12;
  limitExceeded @13;
  loginFailed @14;
  expired @15;
  treeBaseRequired @16; # commitChannel: send the whole ratchet tree, not a delta
}

struct Error {
  code @0 :ErrorCode;
  message @1 :Text;        # human-readable, never a traceback
  retryAfterMs @2 :UInt32; # non-zero: wait this long before retrying
}

# ------------------------------------------------------- params and results

struct HealthParams {}
struct HealthResult {
  status @0 :Text;         # "ok" or "degraded"
  version @1 :Text;
  uptimeMs @2 :UInt64;
  storeBackend @3 :Text;
}

struct PingParams { payload @0 :Data; }          # <= 1 KiB
struct PingResult {
  payload @0 :Data;                              # echo
  serverTimeMs @1 :UInt64;
}

struct WhoamiParams {}
struct WhoamiResult {
  username @0 :Text;
  deviceId @1 :Data;
  deviceRegistered @2 :Bool;
  sessionExpiresMs @3 :UInt64;
}

struct RegisterStartParams {
  username @0 :Text;
  request @1 :Data;        # OPAQUE RegistrationRequest
}
struct RegisterStartResult { response @0 :Data; }  # RegistrationResponse

struct RegisterFinishParams {
  username @0 :Text;
  upload @1 :Data;         # OPAQUE RegistrationUpload
}
struct RegisterFinishResult {}

struct LoginStartParams {
  username @0 :Text;
  request @1 :Data;        # OPAQUE CredentialRequest
}
struct LoginStartResult {
  loginId @0 :Data;        # 16 bytes
  response @1 :Data;       # CredentialResponse
}

struct LoginFinishParams {
  loginId @0 :Data;
  finalization @1 :Data;   # CredentialFinalization
  deviceId @2 :Data;
}
struct LoginFinishResult {
  token @0 :Data;          # 32 bytes
  expiresMs @1 :UInt64;
}

struct LogoutParams {}
struct LogoutResult {}

struct RegisterDeviceParams {
  hybridKey @0 :Data;
  signature @1 :Data;
  deliveryAccessKey @2 :Data;  # 32 bytes or empty
}
struct RegisterDeviceResult {}

struct UploadKeyPackagesParams {
  packages @0 :List(Data);
  lastResort @1 :Data;     # empty = keep the current one
}
struct UploadKeyPackagesResult { stock @0 :UInt32; }

struct FetchKeyPackageParams {
  username @0 :Text;
  deviceId @1 :Data;
}
struct FetchKeyPackageResult {
  package @0 :Data;
  lastResort @1 :Bool;
}

struct KeyPackageCountParams {}
struct KeyPackageCountResult {
  count @0 :UInt32;
  hasLastResort @1 :Bool;
}

struct ListDevicesParams { username @0 :Text; }
struct ListDevicesResult { devices @0 :List(Device); }

struct FetchHybridKeyParams { deviceId @0 :Data; }
struct FetchHybridKeyResult {
  hybridKey @0 :Data;
  signature @1 :Data;
}

struct EnqueueParams {
  recipient @0 :Data;      # deviceId
  channelId @1 :Data;
  payload @2 :Data;
  accessKey @3 :Data;      # sealed sender: empty auth, this key authorises
}
struct EnqueueResult { seq @0 :UInt64; }

struct EnqueueCommitParams {
  channelId @0 :Data;
  epoch @1 :UInt64;
  fanout @2 :List(Recipient);
}
struct EnqueueCommitResult {
  seqs @0 :List(UInt64);
  newEpoch @1 :UInt64;
}

struct FetchParams {
  afterSeq @0 :UInt64;
  limit @1 :UInt32;
}
struct FetchResult { envelopes @0 :List(Envelope); }

struct FetchWaitParams {
  afterSeq @0 :UInt64;
  timeoutMs @1 :UInt32;    # 0 = until cancelled
}
struct FetchWaitResult { envelopes @0 :List(Envelope); }

struct AckParams { uptoSeq @0 :UInt64; }
struct AckResult {}

struct PostChannelParams {
  # One MLS message for a channel, stored once and referenced from each
  # recipient's inbox. Sent without a session token: postKey authorises.
  channelId @0 :Data;
  postKey @1 :Data;        # 32 bytes: the channel's post capability this epoch
  recipients @2 :List(Data); # deviceIds (or, packed, in recipientIds)
  payload @3 :Data;        # the MLS message (not sealed per device)
  recipientIds @4 :Data;   # deviceIds, 32 bytes each, concatenated: 32 B per recipient
                           # on the wire (a List(Data) adds an 8 B pointer per element);
                           # at most one of recipients / recipientIds is non-empty
}
struct PostChannelResult {
  stored @0 :UInt32;       # recipients whose inbox took it (full inboxes are skipped)
}

struct CommitChannelParams {
  # Epoch-checked commit stored once, referenced by every member device; the
  # Welcome stored once, referenced by every joining device.
  channelId @0 :Data;
  epoch @1 :UInt64;
  postKey @2 :Data;        # the current epoch's post capability (empty: new channel)
  commit @3 :Data;
  members @4 :List(Data);  # deviceIds that get the commit
  welcome @5 :Data;        # empty = none
  joiners @6 :List(Data);  # deviceIds that get the Welcome
  # Welcome by reference (instead of `welcome`): the shared parts stored once
  # for the new epoch, each joiner's inbox gets only its own entry.
  groupInfo @7 :Data;      # split Welcome's shared part (encrypted GroupInfo); empty = none
  ratchetTree @8 :Data;    # the new epoch's sealed ratchet tree (node cannot open it)
  joinerEntries @9 :List(Data); # per joiner, same order: 0x02 || epoch || EncryptedGroupSecrets
  # The new epoch's tree part goes either whole (`ratchetTree`, a base) or as a
  # delta from the previous epoch's tree (`treeDelta`), never both; with
  # joiners by reference one of them is required (docs/PROTOCOL.md, "Tree deltas").
  treeDelta @10 :Data;     # the new epoch's sealed tree delta (node cannot open it)
  memberIds @11 :Data;     # `members` packed: deviceIds, 32 bytes each, concatenated
                           # (32 B per member; at most one of members / memberIds is non-empty)
}
struct CommitChannelResult { newEpoch @0 :UInt64; }

struct SetChannelKeyParams {
  # By the device whose commit made `epoch`: SHA-256 of the new post capability.
  channelId @0 :Data;
  epoch @1 :UInt64;
  keyHash @2 :Data;        # 32 bytes
}
struct SetChannelKeyResult {}

struct FetchWelcomeParams {
  # By a device whose inbox holds a Welcome reference of this channel and epoch.
  channelId @0 :Data;
  epoch @1 :UInt64;        # the epoch the joiner joins at
}
struct FetchWelcomeResult {
  groupInfo @0 :Data;      # split Welcome's shared part
  ratchetTree @1 :Data;    # sealed ratchet tree: the latest base at or before that epoch
  treeDeltas @2 :List(Data); # sealed deltas of the epochs after the base, up to that epoch, in order
}
struct UnlinkDeviceParams {
  # Remove another device of the caller's account: its directory entry,
  # KeyPackages, sessions and inbox (docs/PROTOCOL.md, "Linked devices").
  deviceId @0 :Data;
}
struct UnlinkDeviceResult {}

# ------------------------------------------------------------ wire messages

struct Request {
  auth @0 :Data;           # session token (32 bytes) or empty
  union {
    health @1 :HealthParams;
    ping @2 :PingParams;
    whoami @3 :WhoamiParams;
    registerStart @4 :RegisterStartParams;
    registerFinish @5 :RegisterFinishParams;
    loginStart @6 :LoginStartParams;
    loginFinish @7 :LoginFinishParams;
    logout @8 :LogoutParams;
    registerDevice @9 :RegisterDeviceParams;
    uploadKeyPackages @10 :UploadKeyPackagesParams;
    fetchKeyPackage @11 :FetchKeyPackageParams;
    keyPackageCount @12 :KeyPackageCountParams;
    listDevices @13 :ListDevicesParams;
    fetchHybridKey @14 :FetchHybridKeyParams;
    enqueue @15 :EnqueueParams;
    enqueueCommit @16 :EnqueueCommitParams;
    fetch @17 :FetchParams;
    fetchWait @18 :FetchWaitParams;
    ack @19 :AckParams;
    postChannel @20 :PostChannelParams;
    commitChannel @21 :CommitChannelParams;
    setChannelKey @22 :SetChannelKeyParams;
    fetchWelcome @23 :FetchWelcomeParams;
    unlinkDevice @24 :UnlinkDeviceParams;
  }
}

struct Response {
  union {
    error @0 :Error;
    health @1 :HealthResult;
    ping @2 :PingResult;
    whoami @3 :WhoamiResult;
    registerStart @4 :RegisterStartResult;
    registerFinish @5 :RegisterFinishResult;
    loginStart @6 :LoginStartResult;
    loginFinish @7 :LoginFinishResult;
    logout @8 :LogoutResult;
    registerDevice @9 :RegisterDeviceResult;
    uploadKeyPackages @10 :UploadKeyPackagesResult;
    fetchKeyPackage @11 :FetchKeyPackageResult;
    keyPackageCount @12 :KeyPackageCountResult;
    listDevices @13 :ListDevicesResult;
    fetchHybridKey @14 :FetchHybridKeyResult;
    enqueue @15 :EnqueueResult;
    enqueueCommit @16 :EnqueueCommitResult;
    fetch @17 :FetchResult;
    fetchWait @18 :FetchWaitResult;
    ack @19 :AckResult;
    postChannel @20 :PostChannelResult;
    commitChannel @21 :CommitChannelResult;
    setChannelKey @22 :SetChannelKeyResult;
    fetchWelcome @23 :FetchWelcomeResult;
    unlinkDevice @24 :UnlinkDeviceResult;
  }
}

# ------------------------------------------------------------- documentation

interface NodeService {
  # The method table: names, ordinals, params and result types, `$streaming`.
  # Not served as Cap'n Proto RPC: each call travels as one Request/Response
  # exchange on its own QUIC stream; the union member of `Request` and
  # `Response` carrying a method has the method's name.
  health @0 HealthParams -> HealthResult;
  ping @1 PingParams -> PingResult;
  whoami @2 WhoamiParams -> WhoamiResult;
  registerStart @3 RegisterStartParams -> RegisterStartResult;
  registerFinish @4 RegisterFinishParams -> RegisterFinishResult;
  loginStart @5 LoginStartParams -> LoginStartResult;
  loginFinish @6 LoginFinishParams -> LoginFinishResult;
  logout @7 LogoutParams -> LogoutResult;
  registerDevice @8 RegisterDeviceParams -> RegisterDeviceResult;
  uploadKeyPackages @9 UploadKeyPackagesParams -> UploadKeyPackagesResult;
  fetchKeyPackage @10 FetchKeyPackageParams -> FetchKeyPackageResult;
  keyPackageCount @11 KeyPackageCountParams -> KeyPackageCountResult;
  listDevices @12 ListDevicesParams -> ListDevicesResult;
  fetchHybridKey @13 FetchHybridKeyParams -> FetchHybridKeyResult;
  enqueue @14 EnqueueParams -> EnqueueResult;
  enqueueCommit @15 EnqueueCommitParams -> EnqueueCommitResult;
  fetch @16 FetchParams -> FetchResult;
  fetchWait @17 FetchWaitParams -> FetchWaitResult $streaming;
  ack @18 AckParams -> AckResult;
  postChannel @19 PostChannelParams -> PostChannelResult;
  commitChannel @20 CommitChannelParams -> CommitChannelResult;
  setChannelKey @21 SetChannelKeyParams -> SetChannelKeyResult;
  fetchWelcome @22 FetchWelcomeParams -> FetchWelcomeResult;
  unlinkDevice @23 UnlinkDeviceParams -> UnlinkDeviceResult;
}
