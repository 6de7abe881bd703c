"""The store's commands: migrate, config check, dev-key, grants, check and
checkpoint. They read the settings and the key file as `serve` does
(configured.py) and talk to no server.

Exit codes (exits.py): 0 done; 1 a problem found (`check`, `config
check`); 2 the command cannot run as configured, 3 the database is
unavailable (one line on stderr naming the cause and the fix)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from ..app.ports import IntegrityViolation
from ..config import settings as config_mod
from ..config.access import AccessConfigError, access_from_settings
from ..keys.file_modes import FileModeError, check_private_file
from ..keys.ring import KeyFileError, KeyRing, add_missing_sections, write_new_key_file
from ..runtime.clock import system_clock
from ..store import checkpoints
from ..store.check import check_store
from ..store.engine import display_url, reach
from ..store.errors import StoreRefused, StoreUnavailable, diagnose
from ..store.event_store import EventStore
from ..store.key_checks import has_verifiers, key_mismatches, key_problems
from ..store.migrate import terminals_lack_macs, upgrade
from ..store.rechain import (
    RechainRefused,
    rechain,
    seal_answers,
    seal_terminals,
    unkeyed_events,
    unsealed_answers,
    unsealed_terminals,
)
from ..store.roles import RoleNameError, grant_script
from ..store.schema_check import SchemaMismatch, check_schema
from ..store.tree import fill_nodes, unfilled
from .configured import config_problems, keys, settings
from .exits import CANNOT_RUN, UNAVAILABLE, fail


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite store (None for other databases, or in memory)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def store_failure(problem: StoreRefused | StoreUnavailable) -> None:
    fail(str(problem), CANNOT_RUN if isinstance(problem, StoreRefused) else UNAVAILABLE)


@contextlib.contextmanager
def database_errors(url: str) -> Iterator[None]:
    """A database that refuses this command, or cannot be reached, is one
    line naming the cause and the fix (exit 2 or 3), not a traceback."""
    try:
        yield
    except (StoreRefused, StoreUnavailable) as exc:
        store_failure(exc)
    except SQLAlchemyError as exc:
        if (problem := diagnose(exc, url)) is None:
            raise
        store_failure(problem)


def existing_store(s: config_mod.Settings, ring: KeyRing | None = None) -> EventStore:
    """The configured store, refused (not created) when it does not exist,
    when it cannot be reached, when its schema is not this code's, or when
    `ring` holds a key under an id the store knows with another key; each in
    one line (exit 2, or 3 when the database is unavailable)."""
    path = sqlite_path(s.database_url)
    if path is not None and not path.exists():
        fail(f"there is no store at {path} (run `pinlife migrate` to make one)")
    with database_errors(s.database_url):
        reach(s.database_url)
        try:
            check_schema(s.database_url)
        except SchemaMismatch as exc:
            fail(str(exc))
        store = EventStore(s.database_url)
        if ring is not None and (mismatches := key_mismatches(store, ring)):
            store.close()
            fail("; ".join(mismatches))
    return store


KEY_FILE = "the key file (PINLIFE_KEY_FILE)"  # as configured.keys names it
TLS_KEY = "the TLS private key ([tls] key)"  # as bootstrap.instance names it


def config_check(args: argparse.Namespace) -> None:
    """Everything `serve` checks before it binds, without serving: the
    configuration (file and variables), the access rules and the offices
    file (their references to each other), the TLS files, the key file and
    the private files' modes, the database URL; with --connect, the database
    reachable, at this code's schema and holding this key file's check
    values (nothing is written). Every problem at once; exit 0 if none
    (warnings aside), 1 otherwise."""
    env = dict(os.environ)
    if args.file:
        env.pop("PINLIFE_CONFIG", None)
    try:
        s, problems = config_mod.load_with_problems(env, path=args.file)
    except config_mod.ConfigError as exc:
        config_problems(exc.problems, code=1)
    warnings: list[str] = []

    def private(path: Path, what: str) -> None:  # the same rule serve applies
        try:
            if warning := check_private_file(path, production=s.production, what=what):
                warnings.append(warning)
        except FileModeError as exc:
            problems.append(str(exc))

    try:
        access = access_from_settings(s)
    except AccessConfigError as exc:
        problems += exc.problems
        access = None
    if access is not None and access.tls.key_path is not None:
        private(access.tls.key_path, TLS_KEY)
    ring: KeyRing | None = None
    try:
        ring = KeyRing.load(s.key_file)
    except KeyFileError as exc:
        problems.append(f"PINLIFE_KEY_FILE ([keys] key_file): {exc}")
    else:
        private(s.key_file, KEY_FILE)
    connected = ""
    if getattr(args, "connect", False):
        if any(p.startswith("PINLIFE_DATABASE_URL ") for p in problems):
            problems.append("--connect: not tried, the database URL is wrong")
        else:
            problems += _database_problems(s, ring)
            connected = ", database at schema head" + (" with this key file's check values" if ring else "")
    for warning in warnings:
        print(f"pinlife: warning: {warning}", file=sys.stderr)
    if problems:
        config_problems(problems, code=1)
    where = args.file or os.environ.get("PINLIFE_CONFIG") or "the environment"
    mode = "mutual TLS" if s.tls else "development mode (plain text on loopback)"
    print(f"pinlife: {where}: ok ({s.env}, {mode}, {s.database_url.split('://')[0]} store{connected})")


def _database_problems(s: config_mod.Settings, ring: KeyRing | None) -> list[str]:
    """What serve's start would refuse in the database: its schema
    (check_schema) and the key check values (key_problems, recording none)."""
    path = sqlite_path(s.database_url)
    if path is not None and not path.exists():  # connecting would make it
        return [f"PINLIFE_DATABASE_URL: there is no store at {path} (run `pinlife migrate` to make one)"]
    try:
        check_schema(s.database_url)
    except (SchemaMismatch, StoreRefused, StoreUnavailable) as exc:  # one line each, as `serve` says them
        return [f"PINLIFE_DATABASE_URL {display_url(s.database_url)}: {exc}"]
    if ring is None:
        return []
    store = EventStore(s.database_url, read_pool=1)
    try:
        return [f"PINLIFE_KEY_FILE: {p}" for p in key_problems(store, ring, system_clock(), record=False)]
    except SQLAlchemyError as exc:
        return [f"PINLIFE_DATABASE_URL {display_url(s.database_url)}: cannot read the key check values ({type(exc).__name__})"]
    finally:
        store.close()


def migrate(args: argparse.Namespace) -> None:
    """Apply the migrations; then, if the store holds events chained before
    keyed chains, re-chain them under the integrity key, and MAC answers kept
    before answers had MACs, and terminal rows from before terminals had MACs
    when this run adds that column or --seal-terminals asks
    (service/store/rechain.py); and store the Merkle subtree hashes proofs
    are served from, below a checkpoint signed before they were kept
    (service/store/tree.py)."""
    s = settings()
    with database_errors(s.database_url):
        reach(s.database_url)
        try:
            check_schema(s.database_url)
        except SchemaMismatch as exc:
            if exc.ahead:  # nothing to apply: this code cannot read that schema
                fail(str(exc))
        seal = getattr(args, "seal_terminals", False) or terminals_lack_macs(s.database_url)
        upgrade(s.database_url)
        print("migrated to head")
        _after_upgrade(s, seal)


def _after_upgrade(s: config_mod.Settings, seal: bool) -> None:
    store = EventStore(s.database_url)
    try:
        if unkeyed_events(store):
            try:
                print(f"re-chained {rechain(store, keys(s).integrity)} events under the integrity key")
            except RechainRefused as exc:
                fail(f"not re-chained: {exc}")
        if unsealed_answers(store):
            print(f"sealed {seal_answers(store, keys(s).integrity)} kept answers under the integrity key")
        if seal and unsealed_terminals(store):
            print(f"sealed {seal_terminals(store, keys(s).integrity)} terminal rows under the integrity key")
        if (todo := unfilled(store)) is not None:
            size, root = todo
            try:
                print(f"stored {fill_nodes(store, size, root)} Merkle subtree hashes for proofs up to tree size {size}")
            except IntegrityViolation as exc:
                fail(f"no proofs below tree size {size}: {exc.reason} (`pinlife check` for the report)")
    finally:
        store.close()


def grants(args: argparse.Namespace) -> None:
    """Print the SQL that gives the service's PostgreSQL role exactly the
    privileges it needs (docs/database-roles.md); run it as the schema owner."""
    try:
        print(grant_script(args.role), end="")
    except RoleNameError as exc:
        fail(str(exc))


def dev_key(args: argparse.Namespace) -> None:
    """A development key file. Never over a store that already has
    verifiers: they were made with a key this command cannot bring back, and
    a new key under the same id would turn every correct PIN into a wrong one."""
    s = settings()
    path = Path(args.path or s.key_file)
    if path.exists():
        added = add_missing_sections(path)
        print(f"{path} exists; keeping its keys" + (f", added {' and '.join(added)} keys" if added else ""))
        return
    db = sqlite_path(s.database_url)
    if db is None or db.exists():
        store = EventStore(s.database_url)
        try:
            verifiers = has_verifiers(store)
        except Exception:  # noqa: BLE001 - an unmigrated or unreachable store has no verifiers to lose
            verifiers = False
        finally:
            store.close()
        if verifiers:
            fail(
                f"{path} is missing but the store {display_url(s.database_url)} already has PIN verifiers "
                "made with its key: restore the key file (a new key would make every correct PIN wrong), "
                "or point PINLIFE_DATABASE_URL at a new store"
            )
    write_new_key_file(path)
    print(
        f"WARNING: wrote development keys to {path}. Production keys come from a secret store and are named by PINLIFE_KEY_FILE.",
        file=sys.stderr,
    )


def check(args: argparse.Namespace) -> None:
    """Every integrity check of the store (service/store/check.py); exit 0
    intact, 1 a problem found, 2 an error."""
    s = settings()
    notes = []
    for name in args.checkpoint or ():
        try:
            notes.append(Path(name).read_text())
        except OSError as exc:
            fail(f"cannot read the checkpoint {name}: {exc.strerror}")
    ring = keys(s)
    store = existing_store(s, ring)
    try:
        with database_errors(s.database_url):
            report = check_store(store, ring, notes, clock_skew=timedelta(seconds=s.clock_skew_seconds))
            print(json.dumps({**report.as_dict(), "secrets_by_key": store.cards.secrets_by_key()}, default=str))
    finally:
        store.close()
    sys.exit(0 if report.intact else 1)


def checkpoint(args: argparse.Namespace) -> None:
    """Sign a checkpoint of the log now and print it (the signed note), with
    the verifier key to check it with on stderr."""
    s = settings()
    ring = keys(s)
    store = existing_store(s)
    try:
        with database_errors(s.database_url):
            if problems := key_problems(store, ring, system_clock()):
                fail("not signed: " + "; ".join(problems))
            try:
                checkpoints.sign_checkpoint(store, ring, system_clock())
            except IntegrityViolation as exc:
                # a problem found in the store: 1, as `pinlife check` says
                fail(f"not signed: {exc.stream_id}: {exc.reason} (`pinlife check` for the report)", code=1)
            latest = checkpoints.latest_authentic(store, ring)  # a forged row is skipped (and logged), not printed
    finally:
        store.close()
    if latest is None:
        fail("the log is empty; nothing to sign")
    print(latest.note, end="")
    print(f"verifier key: {checkpoints.public_verifier_key(ring)}", file=sys.stderr)
