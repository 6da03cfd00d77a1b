"""Before the merge: source inventory, task-vector statistics, method recommendation."""
