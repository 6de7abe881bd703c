"""The rules of DESIGN.md §2-5, free of gRPC and SQL: pure functions of
their arguments (the time and the configuration are passed in).

Where each rule lives (every module of the package):

- PIN types, formats, retry limits ............... pins.py
- card ids, the Individual Number guard .......... card_ids.py
- request ids .................................... requests.py
- stream names, the terminal-id rule ............. streams.py
- commands (imperative), validated on creation ... commands.py
- events (past tense) and their stored words ..... events.py
- old stored event shapes, read as current ....... upcasting.py
- state and evolve (the projection fold) ......... state.py
- what configuration the rules take .............. policy.py
- offices, hours, closures, wards ................ calendar.py
- documents to present at a counter, by procedure  documents.py
- the rules both deciders and the lawful check
  apply, each stated once (guards) ............... guards.py
- what deciders share: Decision, Context, the PIN
  check, the enrolled / PIN-set requirements ..... decision.py
- decide: enrol, verify, change; each command's
  rule picked by decide() ........................ decide.py
- what each command answers (typed) ............. outcomes.py
- the reset procedures (counter, proxy, store) ... procedures.py
- the way out of a lock or a suspension; a PIN
  and a card as answers show them ................ recovery.py
- an event as the log holds it, read once ........ log.py
- what an integrity check reports ................ integrity.py
- which histories the rules could produce ........ lawful.py
- the hash chain of a stream ..................... chain.py
- Merkle tree and checkpoints' hashing ........... merkle.py
- which role may call which RPC .................. access.py
- terminal throttling ............................ throttle.py
- audit filters, pages, cursors, outcomes ........ audit.py
- errors (bad input, not found, ...) ............. errors.py

Imports run one way: guards.py imports neither a decider nor lawful.py;
decide.py imports procedures.py and decision.py, never the reverse.
"""
