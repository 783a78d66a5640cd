from uvrd.uploader.settled_tasks import SettledTasks


def test_a_task_is_remembered_once_settled():
    tasks = SettledTasks()
    assert "t-1" not in tasks
    tasks.add("t-1")
    assert "t-1" in tasks and len(tasks) == 1


def test_the_oldest_are_forgotten_first_and_a_task_seen_again_is_kept():
    tasks = SettledTasks(capacity=3)
    for t in ("a", "b", "c"):
        tasks.add(t)
    tasks.add("a")  # seen again: now the most recent
    tasks.add("d")
    assert "b" not in tasks and all(t in tasks for t in ("a", "c", "d")) and len(tasks) == 3
