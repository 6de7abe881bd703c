"""The rules of DESIGN.md §2-3, free of gRPC and SQL.

Where each rule lives:

- PIN types, formats, retry limits ........ pins.py
- card ids, the Individual Number guard ... card_ids.py
- request ids ............................. requests.py
- events (past tense) ..................... events.py
- commands (imperative) ................... commands.py
- state and evolve (the projection fold) .. state.py
- decide: what events a command produces .. decide.py
- the way out of a lock ................... recovery.py
- the hash chain of a stream .............. chain.py
- which role may call which RPC ........... access.py
- terminal throttling ..................... throttle.py
- errors (bad input, not found, ...) ...... errors.py
"""
