import sys, json, collections, glob, os, numpy as np, onnxruntime as ort
def feeds(sess, past=64):
    f = {}
    for i in sess.get_inputs():
        n = i.name
        if n == "input_ids": f[n] = np.array([[5]], np.int64)
        elif "mask" in n: f[n] = np.ones((1, past + 1), np.int64)
        elif "position" in n: f[n] = np.array([[past]], np.int64)
        elif "past" in n:
            shp = [1, i.shape[1], past, i.shape[3] if isinstance(i.shape[3], int) else 64]
            f[n] = np.random.default_rng(0).normal(size=shp).astype(np.float32)
        else: raise SystemExit(n)
    return f
for label, path in [("zoo-int4", "/tmp/i4w/artifacts/probe-cpu/model.onnx"), ("genai-int4", "/tmp/i4w/genai-int4-cpu/model.onnx")]:
    o = ort.SessionOptions(); o.intra_op_num_threads = 2; o.enable_profiling = True; o.profile_file_prefix = f"/tmp/i4w/prof_{label}"
    s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
    f = feeds(s)
    for _ in range(5): s.run(None, f)
    n = 40
    for _ in range(n): s.run(None, f)
    pf = s.end_profiling()
    ev = json.load(open(pf))
    by = collections.Counter(); cnt = collections.Counter(); runs = []
    for e in ev:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            by[e["args"]["op_name"]] += e["dur"]; cnt[e["args"]["op_name"]] += 1
        if e.get("cat") == "Session" and e["name"] == "model_run": runs.append(e["dur"])
    runs = runs[-n:]
    tot = sum(by.values()) / (n + 5)
    print(label, "model_run median us", np.median(runs), "kernel sum/run us", round(tot), "nodes/run", sum(cnt.values()) // (n + 5))
    for op, d in by.most_common(10): print(f"   {op:32s} {d/(n+5):8.0f} us  x{cnt[op]//(n+5)}")
    os.remove(pf)
