"""An allocation the model cannot make fails the task with one sentence (engine_child._describe): the
child answers JobFailed, which is never retried and is dead-lettered like any failure."""

from uvrd.processor.engine_child import _describe, out_of_memory
from uvrd.processor.engine_protocol import Job


class OutOfMemoryError(RuntimeError):  # torch.cuda.OutOfMemoryError's name, without torch
    pass


class RuntimeException(Exception):  # onnxruntime's
    pass


JOB = Job("t", "/spool/in.flac", "m.onnx", "flac", "/out/work")


def test_torch_on_a_card_or_the_cpu_and_onnxruntime_and_numpy_out_of_memory_are_one_sentence():
    for error in (OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 7.79 GiB total)"),
                  RuntimeException("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Failed to allocate memory for "
                                   "requested buffer of size 1073741824"),
                  # torch 2.x on the CPU, as it said here under a process memory limit
                  RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
                               "memory: you tried to allocate 400000000000000 bytes. Error code 12 (Cannot allocate "
                               "memory)"),
                  MemoryError("Unable to allocate 25.1 GiB for an array with shape (2, 3175200000)")):
        assert out_of_memory(error)
        line = _describe(error, JOB)
        assert line.startswith("separation failed: the model ran out of memory separating this input")
        assert "\n" not in line and "/spool" not in line


def test_other_failures_keep_their_own_description():
    error = ValueError("bad shape")
    assert not out_of_memory(error)
    assert _describe(error, JOB) == "separation failed: ValueError: bad shape"
