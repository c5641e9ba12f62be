"""The application layer: sampling jobs from requests to files a person looks at.

* :mod:`.pipeline` - the checkpoint, image tokenizer and text tokenizer, loaded once;
* :mod:`.requests` - prompts and input images from flags or a JSONL file;
* :mod:`.tasks` - one :class:`~.tasks.Task` per job and the one batch runner :func:`~.tasks.run_task`;
* :mod:`.outputs` - sample folders, pictures and trajectory GIFs;
* :mod:`.cli` - command-line flags derived from the settings classes.
"""

from .pipeline import Pipeline, load_pipeline
from .requests import Request, read_requests
from .tasks import TASKS, Task, run_task

__all__ = ["Pipeline", "Request", "TASKS", "Task", "load_pipeline", "read_requests", "run_task"]
