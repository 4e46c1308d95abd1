"""Retries and quarantine (farm.policy), as the scheduler asks them: plain bookkeeping, no Ray,
no database, no killed processes (tests/test_reliability.py kills real ones)."""
from farm.policy import QUARANTINE_AFTER, RetryPolicy


def test_an_infrastructure_failure_is_retried_up_to_retries_then_final():
    policy = RetryPolicy(retries=2)
    verdicts = [policy.attempt_ended(7, device, True, "connection dropped", earlier)
                for earlier, device in enumerate(("a", "b", "c"))]
    assert [(v.retry, v.attempt) for v in verdicts] == [(True, 1), (True, 2), (False, 3)]
    assert [v.error for v in verdicts] == ["connection dropped", "connection dropped",
                                           "connection dropped (attempt 3; retries: 2)"]


def test_earlier_runs_attempts_count_too():
    """The store counts a job's infrastructure failures across runs (resume after a crash)."""
    assert not RetryPolicy(retries=2).attempt_ended(7, "a", True, "lost", 2).retry


def test_without_retries_the_first_infrastructure_failure_is_final_and_says_nothing_more():
    verdict = RetryPolicy(retries=0).attempt_ended(7, "a", True, "agent killed", 0)
    assert (verdict.retry, verdict.attempt, verdict.error) == (False, 1, "agent killed")


def test_a_jobs_own_failure_is_never_retried():
    policy = RetryPolicy(retries=5)
    for error in ("out of memory", "timed out after 600 s", "KeyError: 'bert'"):
        verdict = policy.attempt_ended(7, "a", False, error)
        assert (verdict.retry, verdict.attempt, verdict.error) == (False, 0, error)
        assert verdict.quarantine is None


def test_infrastructure_failures_in_a_row_quarantine_the_device_and_a_success_resets_them():
    policy = RetryPolicy(retries=2)
    assert QUARANTINE_AFTER == 2
    assert policy.attempt_ended(1, "a", True, "board unreachable").quarantine is None
    assert policy.attempt_ended(2, "a", False, None).quarantine is None  # the streak resets
    assert policy.attempt_ended(3, "a", True, "board unreachable").quarantine is None
    assert policy.attempt_ended(4, "b", True, "board unreachable").quarantine is None  # b's own
    reason = policy.attempt_ended(5, "a", True, "board unreachable").quarantine
    assert reason == ("quarantined after 2 infrastructure failures in a row; "
                      "last: board unreachable")


def test_the_quarantine_reason_carries_a_final_attempts_count():
    policy = RetryPolicy(retries=1)
    policy.attempt_ended(1, "a", True, "lost", 0)
    assert policy.attempt_ended(1, "a", True, "lost", 1).quarantine.endswith(
        "last: lost (attempt 2; retries: 1)")


def test_a_retry_avoids_the_devices_it_failed_on_while_another_is_usable():
    policy = RetryPolicy(retries=3)
    policy.attempt_ended(7, "a", True, "lost", 0)
    assert policy.avoid(7, "a", ["a", "b"])
    assert not policy.avoid(7, "b", ["a", "b"])
    assert not policy.avoid(8, "a", ["a", "b"])  # another job never failed on a
    policy.attempt_ended(7, "b", True, "lost", 1)
    assert not policy.avoid(7, "a", ["a", "b"])  # it failed everywhere: any device will do
    assert not policy.avoid(7, "a", ["a"])  # b left the run: a again


def test_a_final_failure_adds_no_device_to_avoid():
    policy = RetryPolicy(retries=0)
    policy.attempt_ended(7, "a", True, "lost", 0)
    assert not policy.avoid(7, "a", ["a", "b"])
