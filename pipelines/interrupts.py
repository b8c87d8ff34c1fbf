"""Ctrl-C while an efm command runs: one KeyboardInterrupt, and the clean-up it starts is not broken.

While a command runs (pipelines/failures.py's `session`), SIGINT is `_on_sigint`'s. The first Ctrl-C
stops the run: a KeyboardInterrupt, which `common.run` turns into one line and exit 130. A later
one (people press Ctrl-C twice, or hold it down) changes nothing while that KeyboardInterrupt is
being handled (the `finally` blocks and `except` clauses it passes through: a store left marked
incomplete, a failed set-up undone, the one line), nor once the run's outcome is settled (its
report begins, or it is done). Python drops an exception raised in a `__del__` or a weakref
callback (e.g. importlib's, during an import) with an "Exception ignored" note on stderr: a Ctrl-C
that lands there is noted in the log instead and delivered again, so that it stops the run.

In a process that is the command's own (`efm ...`, `python -m pipelines.<name>`), SIGINT is then
ignored until the process has exited: while Python shuts down (atexit, the joins of threads, the
freeing of modules) it gives SIGINT back its default action, death by the signal (exit -2 to a
parent) with no line. Called from Python (`run([...])`, `cli.main([...])`), SIGINT's handler
before the command is back once it returns. A process started with SIGINT ignored (`nohup`,
`cmd &`), or an application with its own handler, is left as it is.

Only `signal` and `sys` are imported here: pipelines/cli.py calls `own_process` first thing; a
Ctrl-C before that (Python's own start-up, about 0.1 s) is Python's: a traceback.
"""

from __future__ import annotations

import signal
import sys

# run: the outermost session; hook: sys.unraisablehook before it; in_hook: in `_unraisable`
_state: dict = {"tripped": False, "owner": False, "run": None, "hook": None, "in_hook": False}


def _on_sigint(signum, frame) -> None:
    run = _state["run"]
    if run is not None and run.settled:
        return
    if _state["tripped"] and _handling_interrupt():
        return
    if _state["in_hook"]:  # in `_unraisable`: raised here, it would be dropped again
        _deliver_again()
        return
    _state["tripped"] = True
    raise KeyboardInterrupt


def _handling_interrupt() -> bool:
    """Is a KeyboardInterrupt being handled here (a `finally`, an `except`, an `__exit__` on its way)?"""
    exc, seen = sys.exc_info()[1], set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False


def _unraisable(unraisable) -> None:
    """sys.unraisablehook while a command runs: a KeyboardInterrupt Python dropped (raised in a
    `__del__` or a weakref callback) goes to the log, and the Ctrl-C is delivered again from another
    thread (raised here, in the callback's shadow, it would be dropped again)."""
    if not isinstance(unraisable.exc_value, KeyboardInterrupt):
        (_state["hook"] or sys.__unraisablehook__)(unraisable)
        return
    _state["in_hook"] = True
    try:
        logging = sys.modules.get("logging")
        if logging is not None:
            logging.getLogger(__name__).info(
                "a Ctrl-C landed in %r, where Python drops exceptions: delivered again",
                unraisable.object,
            )
        run = _state["run"]
        if not (run is not None and run.settled):
            _deliver_again()
    finally:
        _state["in_hook"] = False


def _deliver_again() -> None:
    """SIGINT again, from another thread: the main thread's handler runs where it is next."""
    import _thread

    def deliver():
        if _state["run"] is not None:  # the command still runs
            _thread.interrupt_main(signal.SIGINT)

    _thread.start_new_thread(deliver, ())


def ignore() -> None:
    """The command's own process, its outcome settled: SIGINT ignored until it exits."""
    if _state["owner"]:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the main thread
            pass


def _forget_caught_interrupt() -> None:
    """CPython notes a KeyboardInterrupt that ends code run from a string (`exec(text)`: a
    dataclass's or namedtuple's methods, built while a module is imported) as "unhandled", even
    when a caller catches it, until the next such run; under `python -m` (Dataflow's and the flex
    templates' entry, `python -m pipelines.<name>`) the process then ends by SIGINT (exit -2 to a
    parent) whatever status it returns. A Ctrl-C landing in an import does that; running an
    empty string clears the note (tests/test_ctrl_c_exit_status.py)."""
    exec("pass")


def _install() -> bool:
    """SIGINT to `_on_sigint` if it has Python's default handler; False if it is left alone."""
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        return False  # ignored, an application's own handler, or already ours
    _state["tripped"] = False
    try:
        signal.signal(signal.SIGINT, _on_sigint)
    except ValueError:  # not the main thread: no Ctrl-C comes here
        return False
    return True


def own_process() -> None:
    """This process is the command's: Ctrl-C handled from now on until it exits."""
    if _install() or signal.getsignal(signal.SIGINT) is _on_sigint:
        _state["owner"] = True


def catch(run):
    """At the start of a command (`run`: its failures.Session, whose `settled` the handler reads):
    SIGINT's handler before it, to give back, or None if SIGINT is left alone."""
    previous = signal.getsignal(signal.SIGINT)
    if previous is _on_sigint or _install():
        _state["run"] = run
        _state["hook"], sys.unraisablehook = sys.unraisablehook, _unraisable
        return previous
    return None


def release(previous) -> None:
    """At the end of a command: the command's own process ignores SIGINT until it exits; otherwise
    SIGINT's handler before the command is back."""
    if previous is None:
        return
    _state["run"] = None
    if sys.unraisablehook is _unraisable:
        sys.unraisablehook, _state["hook"] = _state["hook"] or sys.__unraisablehook__, None
    if _state["owner"]:
        ignore()
        _forget_caught_interrupt()
        return
    try:
        signal.signal(signal.SIGINT, previous)
    except ValueError:  # not the main thread
        pass
