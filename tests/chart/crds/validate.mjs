// Validate Kubernetes custom resources with the vendored @kubernetes-models validators.
// stdin: a JSON array of objects; stdout: a JSON array, per object, of its errors
// ([] when valid, or [{instancePath, message}] ...). Unknown apiVersion/kind is an error.
import { readFileSync } from "node:fs";

const VALIDATORS = {
  "gateway.networking.k8s.io/v1 Gateway": "./node_modules/@kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApisV1Gateway.js",
  "gateway.networking.k8s.io/v1 HTTPRoute": "./node_modules/@kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApisV1HTTPRoute.js",
  "gateway.networking.k8s.io/v1 ReferenceGrant": "./node_modules/@kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApisV1ReferenceGrant.js",
  "gateway.networking.k8s.io/v1beta1 ReferenceGrant": "./node_modules/@kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApisV1beta1ReferenceGrant.js",
  "security.istio.io/v1 AuthorizationPolicy": "./node_modules/@kubernetes-models/istio/_schemas/SecurityIstioIoV1AuthorizationPolicy.js",
  "monitoring.coreos.com/v1 ServiceMonitor": "./node_modules/@kubernetes-models/prometheus-operator/_schemas/ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1ServiceMonitor.js",
  "monitoring.coreos.com/v1 PrometheusRule": "./node_modules/@kubernetes-models/prometheus-operator/_schemas/ComGithubPrometheusOperatorPrometheusOperatorPkgApisMonitoringV1PrometheusRule.js",
};

const objects = JSON.parse(readFileSync(0, "utf-8"));
const results = [];
for (const object of objects) {
  const key = `${object.apiVersion} ${object.kind}`;
  const path = VALIDATORS[key];
  if (!path) {
    results.push([{ instancePath: "", message: `no vendored schema for ${key}` }]);
    continue;
  }
  const { validate } = await import(path);
  if (validate(object)) {
    results.push([]);
  } else {
    results.push(validate.errors.map((e) => ({ instancePath: e.instancePath, message: `${e.keyword} ${JSON.stringify(e.params)}` })));
  }
}
process.stdout.write(JSON.stringify(results));
