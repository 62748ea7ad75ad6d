"""Node services (auth, keys, delivery, misc) and the shared node context.

Where docs/PROTOCOL.md leaves a choice open, the services answer as follows:

* Sessions: a missing, malformed, unknown or forged token is
  ``unauthenticated``; an expired one is ``expired`` (log in again).
  ``[device]`` calls from a token whose device is not registered to the
  token's account answer ``permissionDenied``.
* ``registerStart`` already refuses a taken username (``alreadyExists``), as
  ``registerFinish`` does. ``loginFinish`` with a deviceId registered to
  another account answers ``permissionDenied``; an unknown or reused
  ``loginId`` answers ``loginFailed``, a ``loginId`` older than the login TTL
  ``expired``.
* ``listDevices`` for an unknown user, ``fetchHybridKey`` / ``fetchKeyPackage``
  for an unknown device (or a device of another user), and ``fetchKeyPackage``
  with neither stock nor last-resort package answer ``notFound``.
* ``uploadKeyPackages`` with neither packages nor a last-resort package is
  ``badRequest``; more packages than the per-upload limit, or a stock above the
  per-device limit, is ``limitExceeded``; an empty package ``badRequest``, an
  oversized one ``payloadTooLarge``.
* Sealed-sender ``enqueue`` (empty auth) with a wrong or missing access key,
  to a device without one, or to an unknown device: all ``permissionDenied``,
  indistinguishable. With a token, an unknown recipient is ``notFound``.
* ``enqueueCommit`` with an unknown fan-out recipient is ``notFound`` and
  stores nothing; an empty fan-out is allowed (it only advances the epoch).
* ``fetch``/``fetchWait`` ``limit`` 0 means the node's maximum (``max_fetch``).
  Cursors above 2^63 - 1 are clamped (stores keep signed 64-bit seqs); an
  ``epoch`` of 2^63 - 1 or more is ``badRequest``.
* ``fetchWait`` always answers at once, with the waiting envelopes or with
  none; that first answer also tells the client the subscription is live.
* ``commitChannel`` with both ``ratchetTree`` and ``treeDelta``, or a Welcome
  by reference without either, is ``badRequest``; a ``treeDelta`` the
  channel's tree chain cannot take (no part of the commit's epoch, or past
  64 deltas / max(base, 256 KiB) delta bytes since the base) is
  ``treeBaseRequired`` and stores nothing (docs/PROTOCOL.md, "Tree deltas").
"""
