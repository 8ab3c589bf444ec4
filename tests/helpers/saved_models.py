"""What a SavedModel's graph is made of, read from its saved_model.pb. TensorFlow alone, nothing of tfcaption's
nor of the tests package: the export tests' TensorFlow-only child processes import it from its folder
(`tests.helpers.paths.HELPERS_DIR` on their sys.path)."""

import os


def graph_ops(path):
    """(every op of the graph and its functions, those among them that are neither a function of the graph
    nor a registered TensorFlow op), each a sorted list, of the SavedModel directory `path`."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.framework import op_def_registry

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    graph = proto.meta_graphs[0].graph_def
    ops = {n.op for n in graph.node} | {n.op for fn in graph.library.function for n in fn.node_def}
    functions = {fn.signature.name for fn in graph.library.function}
    return sorted(ops), sorted(op for op in ops if op not in functions and op_def_registry.get(op) is None)


def assert_core_ops_only(path):
    """Every op of the graph and its functions is a registered TensorFlow op, and none calls Python."""
    ops, unregistered = graph_ops(path)
    assert not unregistered
    assert not {"PyFunc", "EagerPyFunc", "PyFuncStateless"} & set(ops)
