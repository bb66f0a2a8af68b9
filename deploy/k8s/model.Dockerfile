# The model as its own image, copied into the API pod by an init container
# (deploy/k8s/deployment.yaml). Build from the run folder that holds onnx/:
#   docker build -f deploy/k8s/model.Dockerfile -t REGISTRY/lawclf-model:TAG runs/sample
FROM busybox:1.36
COPY onnx/ /model/onnx/
# Non-root, matching the pod's runAsUser.
USER 10001:10001
