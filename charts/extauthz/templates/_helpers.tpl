{{/*
Names and labels.
*/}}
{{- define "extauthz.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "extauthz.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "extauthz.selectorLabels" -}}
app.kubernetes.io/name: {{ include "extauthz.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "extauthz.labels" -}}
{{ include "extauthz.baseLabels" . }}
{{ include "extauthz.selectorLabels" . }}
app.kubernetes.io/component: ext-authz
{{- end }}

{{/* Labels every resource carries: the chart's, and `commonLabels`. */}}
{{- define "extauthz.baseLabels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/*
Labels of the `helm test` pods: not the selector labels, so neither the Service nor the
Deployment ever picks a test pod up; the NetworkPolicy admits them by these.
*/}}
{{- define "extauthz.testSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-test" (include "extauthz.name" .) | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The name of the Role (and RoleBinding) in a key namespace. In the release namespace the
full name is unique; in another namespace two releases of the same name (from two
namespaces) could meet, so the release namespace is part of the name there.
Input: dict "root" $ "namespace" NS.
*/}}
{{- define "extauthz.roleName" -}}
{{- $fullname := include "extauthz.fullname" .root }}
{{- if eq .namespace .root.Release.Namespace }}
{{- $fullname }}
{{- else }}
{{- $name := printf "%s-%s" $fullname .root.Release.Namespace }}
{{- if gt (len $name) 63 }}
{{- $name = printf "%s-%s" ($name | trunc 54 | trimSuffix "-") ($name | sha256sum | trunc 8) }}
{{- end }}
{{- $name }}
{{- end }}
{{- end }}

{{/* Which authorization listeners face the network: the values of `transport`. */}}
{{- define "extauthz.grpcExposed" -}}
{{- if has .Values.transport (list "grpc" "both") }}true{{ end }}
{{- end }}
{{- define "extauthz.httpAuthzEnabled" -}}
{{- if has .Values.transport (list "http" "both") }}true{{ end }}
{{- end }}

{{/* The ConfigMap carrying the Grafana dashboard. */}}
{{- define "extauthz.dashboardName" -}}
{{- printf "%s-dashboard" (include "extauthz.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The Service port Prometheus scrapes (/metrics); the ServiceMonitor names it too. */}}
{{- define "extauthz.metricsPortName" -}}http-metrics{{- end }}

{{/* A duration of the schema's form (`30s`, `500ms`, `1m`, `1h`) in milliseconds. */}}
{{- define "extauthz.durationMs" -}}
{{- $number := regexFind "^[0-9]+" . }}
{{- $unit := trimPrefix $number . }}
{{- mul (int64 $number) (get (dict "ms" 1 "s" 1000 "m" 60000 "h" 3600000) $unit) }}
{{- end }}

{{- define "extauthz.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "extauthz.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "extauthz.image" -}}
{{- $img := .Values.image }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default .Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/* Where the config file, the TLS material and the CA bundles are mounted. */}}
{{- define "extauthz.configDir" -}}/etc/extauthz{{- end }}
{{- define "extauthz.tlsDir" -}}/etc/extauthz-tls{{- end }}
{{- define "extauthz.caDir" -}}/etc/extauthz-ca{{- end }}

{{/*
Key sources, normalized: each Kubernetes source gets the release namespace when it
names none; a source with both or neither of secrets/label_selector fails here with
its key path. Input: dict "sources" LIST "path" "config.x.keys" "namespace" NS.
Output: YAML list (read back with fromYamlArray).
*/}}
{{- define "extauthz.keySources" -}}
{{- $out := list }}
{{- $revocation := default false .revocation }}
{{- range $i, $src := .sources }}
{{- $where := printf "%s[%d]" $.path $i }}
{{- if hasKey $src "kubernetes" }}
{{- $k := $src.kubernetes | default dict }}
{{- $secrets := $k.secrets | default list }}
{{- $configmaps := $k.configmaps | default list }}
{{- $selector := $k.label_selector | default "" }}
{{- if and $configmaps (not $revocation) }}
{{- fail (printf "extauthz: %s.kubernetes.configmaps: keys come from Secrets only (ConfigMaps hold revocation lists)" $where) }}
{{- end }}
{{- if and (or $secrets $configmaps) $selector }}
{{- fail (printf "extauthz: %s.kubernetes: set either `secrets`%s (RBAC restricted to those names) or `label_selector` (RBAC on every object of that kind in the namespace), not both; use two sources for both" $where (ternary "/`configmaps`" "" $revocation)) }}
{{- end }}
{{- if not (or $secrets $configmaps $selector) }}
{{- fail (printf "extauthz: %s.kubernetes: needs `secrets: [NAME, ...]`%s or `label_selector: \"key=value\"`" $where (ternary ", `configmaps: [NAME, ...]`" "" $revocation)) }}
{{- end }}
{{- $norm := omit $k "namespace" }}
{{- $_ := set $norm "namespace" (default $.namespace $k.namespace) }}
{{- $out = append $out (dict "kubernetes" $norm) }}
{{- else }}
{{- $out = append $out $src }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
A config section with the "use the service default" values dropped: null, "", [] and {}.
Input: a map. Output: the compacted map (as YAML).
*/}}
{{- define "extauthz.compact" -}}
{{- $out := dict }}
{{- range $k, $v := . }}
{{- if not (or (kindIs "invalid" $v) (and (kindIs "string" $v) (eq $v "")) (and (kindIs "slice" $v) (eq (len $v) 0)) (and (kindIs "map" $v) (eq (len $v) 0))) }}
{{- $_ := set $out $k $v }}
{{- end }}
{{- end }}
{{- toYaml $out }}
{{- end }}

{{/*
The extauthz config file, as YAML. Everything but `listen` comes from .Values.config;
the chart only fills in defaults that depend on the release.
*/}}
{{- define "extauthz.config" -}}
{{- $c := .Values.config }}
{{- $ns := .Release.Namespace }}
{{- $sidecar := eq .Values.mode "sidecar" }}
{{- /* the gRPC listener always runs; with `transport: http` it stays on loopback */}}
{{- $grpcHost := ternary "0.0.0.0" "127.0.0.1" (and (not $sidecar) (eq (include "extauthz.grpcExposed" .) "true")) }}
{{- $listen := dict "grpc" (printf "%s:%d" $grpcHost (int .Values.ports.grpc)) "http" (printf "0.0.0.0:%d" (int .Values.ports.http)) }}
{{- if include "extauthz.httpAuthzEnabled" . }}
{{- $_ := set $listen "http_authz" (printf "%s:%d" (ternary "127.0.0.1" "0.0.0.0" $sidecar) (int .Values.ports.httpAuthz)) }}
{{- with .Values.httpAuthz.pathPrefix }}
{{- $_ := set $listen "http_authz_path_prefix" . }}
{{- end }}
{{- if not .Values.httpAuthz.metadataHeaders }}
{{- $_ := set $listen "http_authz_metadata" false }}
{{- end }}
{{- end }}
{{- if .Values.tls.enabled }}
{{- $tls := dict "cert_file" (printf "%s/tls.crt" (include "extauthz.tlsDir" .)) "key_file" (printf "%s/tls.key" (include "extauthz.tlsDir" .)) }}
{{- if .Values.tls.verifyClients }}
{{- $_ := set $tls "client_ca_file" (printf "%s/ca.crt" (include "extauthz.tlsDir" .)) }}
{{- end }}
{{- $_ := set $listen "tls" $tls }}
{{- end }}
{{- $decryption := include "extauthz.compact" (omit $c.decryption "keys") | fromYaml }}
{{- $revocation := dict }}
{{- with $c.revocation }}
{{- $revocation = include "extauthz.compact" (omit . "sources") | fromYaml }}
{{- with .sources }}
{{- $_ := set $revocation "sources" (include "extauthz.keySources" (dict "sources" . "path" "config.revocation.sources" "namespace" $ns "revocation" true) | fromYamlArray) }}
{{- end }}
{{- end }}
{{- $_ := set $decryption "keys" (include "extauthz.keySources" (dict "sources" $c.decryption.keys "path" "config.decryption.keys" "namespace" $ns) | fromYamlArray) }}
{{- $providers := list }}
{{- range $i, $p := $c.providers }}
{{- $keys := include "extauthz.keySources" (dict "sources" ($p.keys | default list) "path" (printf "config.providers[%d].keys" $i) "namespace" $ns) | fromYamlArray }}
{{- $provider := include "extauthz.compact" (omit $p "keys") | fromYaml }}
{{- if $keys }}
{{- $_ := set $provider "keys" $keys }}
{{- end }}
{{- $providers = append $providers $provider }}
{{- end }}
{{- $cfg := dict "apiVersion" "extauthz/v1" "listen" $listen "decryption" $decryption "providers" $providers }}
{{- range $section := list "token" "upstream" "response" "cache" "logging" "shutdown" "server" "path_matching" }}
{{- if hasKey $c $section }}
{{- $_ := set $cfg $section (include "extauthz.compact" (get $c $section) | fromYaml) }}
{{- end }}
{{- end }}
{{- if $revocation }}
{{- $_ := set $cfg "revocation" $revocation }}
{{- end }}
{{- if $c.rules }}
{{- $rules := list }}
{{- range $c.rules }}
{{- $rules = append $rules (include "extauthz.compact" . | fromYaml) }}
{{- end }}
{{- $_ := set $cfg "rules" $rules }}
{{- end }}
{{- toYaml $cfg }}
{{- end }}

{{/* sha256 of the rendered config: a pod annotation, so a config change rolls the pods. */}}
{{- define "extauthz.configChecksum" -}}
{{- include "extauthz.config" . | sha256sum }}
{{- end }}

{{/*
What the service reads, per namespace and resource, from the rendered config (key
sources and revocation sources): {NS: {secrets: {names: [..], selector: bool},
configmaps: {...}}}. RBAC cannot restrict by label, so a label-selector source needs
get/list/watch on every object of its kind in the namespace.
*/}}
{{- define "extauthz.secretAccess" -}}
{{- $cfg := include "extauthz.config" . | fromYaml }}
{{- $sources := $cfg.decryption.keys }}
{{- range $cfg.providers }}
{{- $sources = concat $sources (.keys | default list) }}
{{- end }}
{{- with $cfg.revocation }}
{{- $sources = concat $sources (.sources | default list) }}
{{- end }}
{{- $access := dict }}
{{- range $sources }}
{{- if hasKey . "kubernetes" }}
{{- $k := .kubernetes }}
{{- $entry := get $access $k.namespace | default dict }}
{{- if $k.label_selector }}
{{- $resource := ternary "configmaps" "secrets" (eq ($k.kind | default "secret") "configmap") }}
{{- $rule := get $entry $resource | default (dict "names" list "selector" false) }}
{{- $_ := set $rule "selector" true }}
{{- $_ := set $entry $resource $rule }}
{{- end }}
{{- range $resource := list "secrets" "configmaps" }}
{{- with (get $k $resource) }}
{{- $rule := get $entry $resource | default (dict "names" list "selector" false) }}
{{- $_ := set $rule "names" (concat $rule.names . | uniq | sortAlpha) }}
{{- $_ := set $entry $resource $rule }}
{{- end }}
{{- end }}
{{- $_ := set $access $k.namespace $entry }}
{{- end }}
{{- end }}
{{- toYaml $access }}
{{- end }}

{{/* Pods the workload normally has: the HPA's floor when autoscaling, else replicaCount. */}}
{{- define "extauthz.replicas" -}}
{{- ternary .Values.autoscaling.minReplicas .Values.replicaCount .Values.autoscaling.enabled | int }}
{{- end }}

{{/*
Render the PodDisruptionBudget? Enabled, and more than one pod (one pod cannot be kept up
through a drain) unless minAvailable or maxUnavailable is set explicitly (then it is
checked against the replica count).
*/}}
{{- define "extauthz.pdbEnabled" -}}
{{- $pdb := .Values.podDisruptionBudget }}
{{- $explicit := not (and (kindIs "invalid" $pdb.minAvailable) (kindIs "invalid" $pdb.maxUnavailable)) }}
{{- if and $pdb.enabled (eq .Values.mode "standalone") (or $explicit (gt (include "extauthz.replicas" . | int) 1)) }}true{{ end }}
{{- end }}

{{/*
NetworkPolicyPeers allowed on the authorization ports: `networkPolicy.grpcFrom`, plus the
Istio namespaces, revisions and ambient namespaces of `networkPolicy.istio`, plus the
release's `helm test` pods. Output: YAML list.
*/}}
{{- define "extauthz.authzPeers" -}}
{{- $np := .Values.networkPolicy }}
{{- $peers := concat (list) $np.grpcFrom }}
{{- range $np.istio.namespaces }}
{{- $peers = append $peers (dict "namespaceSelector" (dict "matchLabels" (dict "kubernetes.io/metadata.name" .))) }}
{{- end }}
{{- with $np.istio.revisions }}
{{- $peers = append $peers (dict "namespaceSelector" (dict "matchExpressions" (list (dict "key" "istio.io/rev" "operator" "In" "values" .)))) }}
{{- if has "default" . }}
{{- $peers = append $peers (dict "namespaceSelector" (dict "matchLabels" (dict "istio-injection" "enabled"))) }}
{{- end }}
{{- end }}
{{- if $np.istio.ambient }}
{{- $peers = append $peers (dict "namespaceSelector" (dict "matchLabels" (dict "istio.io/dataplane-mode" "ambient"))) }}
{{- end }}
{{- toYaml $peers }}
{{- end }}

{{/* The PDB's effective minAvailable, as JSON {"value": ...}: 1 when neither it nor maxUnavailable is set. */}}
{{- define "extauthz.pdbMinAvailable" -}}
{{- $pdb := .Values.podDisruptionBudget }}
{{- if and (kindIs "invalid" $pdb.minAvailable) (kindIs "invalid" $pdb.maxUnavailable) }}
{{- dict "value" 1 | toJson }}
{{- else }}
{{- dict "value" $pdb.minAvailable | toJson }}
{{- end }}
{{- end }}

{{/*
The time the pod may take to stop: a `lifecycle.preStop.sleep` (it runs before SIGTERM),
then the service's drain + grace.
*/}}
{{- define "extauthz.shutdownSeconds" -}}
{{- $preStop := 0 }}
{{- with .Values.lifecycle }}{{ with .preStop }}{{ with .sleep }}{{ $preStop = int .seconds }}{{ end }}{{ end }}{{ end }}
{{- add $preStop (ceil .Values.config.shutdown.drain_seconds) (ceil .Values.config.shutdown.grace_seconds) }}
{{- end }}

{{- define "extauthz.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds }}
{{- add (include "extauthz.shutdownSeconds" . | int) 5 }}
{{- else }}
{{- .Values.terminationGracePeriodSeconds }}
{{- end }}
{{- end }}

{{/*
Invalid value combinations, refused at render time with the offending keys named.
(Single-key constraints live in values.schema.json.)
*/}}
{{- define "extauthz.validate" -}}
{{- $v := .Values }}
{{- $sidecar := eq $v.mode "sidecar" }}
{{- if not $v.config.decryption.keys }}
{{- fail "extauthz: config.decryption.keys: no decryption key source. List the Secrets holding the service's private keys, e.g. [{kubernetes: {secrets: [extauthz-decryption-keys]}}] (create one with `extauthz keygen --use enc --alg RSA-OAEP-256 --secret extauthz-decryption-keys | kubectl create -f -`), or use a label_selector" }}
{{- end }}
{{- range $alg := ($v.config.decryption.key_algorithms | default list) }}
{{- if has $alg (list "none" "RSA1_5") }}
{{- fail (printf "extauthz: config.decryption.key_algorithms: %s is never accepted (RSA1_5 decryption is an oracle for attackers)" $alg) }}
{{- end }}
{{- end }}
{{- range $i, $p := $v.config.providers }}
{{- if has "none" ($p.algorithms | default list) }}
{{- fail (printf "extauthz: config.providers[%d].algorithms: none is never accepted (an unsigned token proves nothing)" $i) }}
{{- end }}
{{- end }}
{{- if not $v.config.providers }}
{{- fail "extauthz: config.providers: at least one provider (token issuer) is required" }}
{{- end }}
{{- if and (not $v.serviceAccount.create) (not $v.serviceAccount.name) }}
{{- fail "extauthz: serviceAccount.name: required when serviceAccount.create is false (the Role is bound to it; the namespace's default ServiceAccount is never used)" }}
{{- end }}
{{- if and $v.tls.enabled (not $v.tls.secretName) }}
{{- fail "extauthz: tls.secretName: required when tls.enabled (a kubernetes.io/tls Secret with tls.crt and tls.key)" }}
{{- end }}
{{- if and $v.tls.verifyClients (not $v.tls.enabled) }}
{{- fail "extauthz: tls.verifyClients needs tls.enabled" }}
{{- end }}
{{- $shutdown := include "extauthz.shutdownSeconds" . | int }}
{{- if and (not (kindIs "invalid" $v.terminationGracePeriodSeconds)) (le (int $v.terminationGracePeriodSeconds) $shutdown) }}
{{- fail (printf "extauthz: terminationGracePeriodSeconds (%d) must be greater than lifecycle.preStop.sleep.seconds + config.shutdown.drain_seconds + grace_seconds (%d), or Kubernetes kills in-flight Checks" (int $v.terminationGracePeriodSeconds) $shutdown) }}
{{- end }}
{{- if $sidecar }}
{{- range $key := list "autoscaling" "networkPolicy" "serviceMonitor" }}
{{- if (get $v $key).enabled }}
{{- fail (printf "extauthz: %s.enabled is not supported with mode: sidecar (the chart renders no Deployment or Service; configure it on the host workload)" $key) }}
{{- end }}
{{- end }}
{{- range $key := list "podLabels" "podAnnotations" "imagePullSecrets" "deploymentAnnotations" }}
{{- if get $v $key }}
{{- fail (printf "extauthz: %s is not used with mode: sidecar (the host chart renders the pod): set it on the host workload" $key) }}
{{- end }}
{{- end }}
{{- if $v.service.headless }}
{{- fail "extauthz: service.headless is not used with mode: sidecar (no Service is rendered)" }}
{{- end }}
{{- end }}
{{- if and $v.service.headless (ne $v.service.type "ClusterIP") }}
{{- fail (printf "extauthz: service.headless needs service.type ClusterIP (got %s)" $v.service.type) }}
{{- end }}
{{- $mounted := list }}
{{- range $v.caBundles }}
{{- if eq (len (pick . "configMap" "secret")) 1 | not }}
{{- fail (printf "extauthz: caBundles entry %q: set exactly one of configMap or secret" .name) }}
{{- end }}
{{- $mounted = append $mounted (printf "%s/%s/" (include "extauthz.caDir" $) .name) }}
{{- end }}
{{- range $v.extraVolumeMounts }}
{{- $mounted = append $mounted (printf "%s/" (trimSuffix "/" .mountPath)) }}
{{- end }}
{{- range $i, $p := $v.config.providers }}
{{- range $j, $k := ($p.keys | default list) }}
{{- if and (hasKey $k "ca_file") $k.ca_file }}
{{- $found := false }}
{{- range $mounted }}{{ if hasPrefix . $k.ca_file }}{{ $found = true }}{{ end }}{{ end }}
{{- if not $found }}
{{- fail (printf "extauthz: config.providers[%d].keys[%d].ca_file (%s) is not in a mounted directory: add a caBundles entry (mounted at %s/NAME/) or an extraVolumeMounts entry, and point ca_file at the file in it" $i $j $k.ca_file (include "extauthz.caDir" $)) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- $monitor := $v.serviceMonitor }}
{{- if and $monitor.enabled (gt (include "extauthz.durationMs" $monitor.scrapeTimeout | int64) (include "extauthz.durationMs" $monitor.interval | int64)) }}
{{- fail (printf "extauthz: serviceMonitor.scrapeTimeout (%s) must not exceed serviceMonitor.interval (%s); Prometheus refuses such a scrape config" $monitor.scrapeTimeout $monitor.interval) }}
{{- end }}
{{- if and $v.autoscaling.enabled (gt (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- fail (printf "extauthz: autoscaling.minReplicas (%d) is greater than autoscaling.maxReplicas (%d)" (int $v.autoscaling.minReplicas) (int $v.autoscaling.maxReplicas)) }}
{{- end }}
{{- $pdb := $v.podDisruptionBudget }}
{{- if include "extauthz.pdbEnabled" . }}
{{- $hasMax := not (kindIs "invalid" $pdb.maxUnavailable) }}
{{- if and (not (kindIs "invalid" $pdb.minAvailable)) $hasMax }}
{{- fail "extauthz: podDisruptionBudget: set minAvailable or maxUnavailable, not both" }}
{{- end }}
{{- $minAvailable := include "extauthz.pdbMinAvailable" . | fromJson }}
{{- $hasMin := not (kindIs "invalid" $minAvailable.value) }}
{{- $pdb = dict "minAvailable" $minAvailable.value "maxUnavailable" $pdb.maxUnavailable }}
{{- $replicas := include "extauthz.replicas" . | int }}
{{- $replicasKey := ternary "autoscaling.minReplicas" "replicaCount" $v.autoscaling.enabled }}
{{- if and $hasMin (not (kindIs "string" $pdb.minAvailable)) (ge (int $pdb.minAvailable) $replicas) }}
{{- fail (printf "extauthz: podDisruptionBudget.minAvailable (%d) must be lower than %s (%d), or no pod could ever be evicted and node drains would block; raise %s to at least %d" (int $pdb.minAvailable) $replicasKey $replicas $replicasKey (add1 (int $pdb.minAvailable))) }}
{{- end }}
{{- if and $hasMax (not (kindIs "string" $pdb.maxUnavailable)) (lt (int $pdb.maxUnavailable) 1) }}
{{- fail "extauthz: podDisruptionBudget.maxUnavailable must be at least 1, or node drains would block" }}
{{- end }}
{{- end }}
{{- if and $v.networkPolicy.enabled (not (include "extauthz.authzPeers" . | fromYamlArray)) }}
{{- fail "extauthz: networkPolicy.grpcFrom: list the peers (your Envoy pods / mesh gateways) allowed on the authorization ports, or set networkPolicy.istio; an empty list would allow nobody to authorize requests" }}
{{- end }}
{{- $ap := $v.istio.authorizationPolicy }}
{{- if and $ap.enabled $ap.selector.matchLabels $ap.targetRefs }}
{{- fail "extauthz: istio.authorizationPolicy: set selector.matchLabels (sidecars) or targetRefs (ambient waypoints, gateways), not both; Istio refuses a policy with both" }}
{{- end }}
{{- if and $ap.enabled (not $ap.selector.matchLabels) (not $ap.targetRefs) }}
{{- fail "extauthz: istio.authorizationPolicy.selector.matchLabels: select the workloads to protect (or targetRefs for a waypoint or gateway); an empty selector applies the CUSTOM policy to every workload of the namespace, extauthz included" }}
{{- end }}
{{- if and $ap.enabled (not $ap.rules) }}
{{- fail "extauthz: istio.authorizationPolicy.rules: at least one rule ([{}] matches every request); a CUSTOM policy without rules checks nothing" }}
{{- end }}
{{- end }}

{{/*
Volumes the extauthz container needs: its config, a writable /tmp and, with TLS, the
certificate Secret. Standalone pods use it; a sidecar host pod includes it too:
  volumes:
    {{- include "extauthz.sidecarVolumes" .Subcharts.extauthz | nindent 4 }}
*/}}
{{- define "extauthz.volumes" -}}
- name: extauthz-config
  configMap:
    name: {{ include "extauthz.fullname" . }}
- name: extauthz-tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
{{- if .Values.tls.enabled }}
- name: extauthz-tls
  secret:
    secretName: {{ .Values.tls.secretName }}
{{- end }}
{{- range .Values.caBundles }}
- name: {{ printf "extauthz-ca-%s" .name | trunc 63 | trimSuffix "-" }}
  {{- if .configMap }}
  configMap:
    name: {{ .configMap }}
  {{- else }}
  secret:
    secretName: {{ .secret }}
  {{- end }}
{{- end }}
{{- with .Values.extraVolumes }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "extauthz.sidecarVolumes" -}}
{{ include "extauthz.volumes" . }}
{{- end }}

{{/*
The extauthz container. Used by the standalone Deployment and, in sidecar mode, by the
host chart:
  containers:
    {{- include "extauthz.sidecarContainer" .Subcharts.extauthz | nindent 4 }}
*/}}
{{- define "extauthz.container" -}}
- name: extauthz
  image: {{ include "extauthz.image" . | quote }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args:
    - serve
    - --config
    - {{ include "extauthz.configDir" . }}/config.yaml
    {{- with .Values.extraArgs }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    {{- if or (include "extauthz.grpcExposed" .) (eq .Values.mode "sidecar") }}
    - name: extauthz-grpc
      containerPort: {{ .Values.ports.grpc }}
      protocol: TCP
    {{- end }}
    {{- if include "extauthz.httpAuthzEnabled" . }}
    - name: extauthz-authz
      containerPort: {{ .Values.ports.httpAuthz }}
      protocol: TCP
    {{- end }}
    - name: extauthz-http
      containerPort: {{ .Values.ports.http }}
      protocol: TCP
  {{- with .Values.env }}
  env:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.envFrom }}
  envFrom:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .Values.lifecycle }}
  lifecycle:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  readinessProbe:
    httpGet:
      path: /readyz
      port: extauthz-http
    {{- toYaml .Values.readinessProbe | nindent 4 }}
  livenessProbe:
    httpGet:
      path: /healthz
      port: extauthz-http
    {{- toYaml .Values.livenessProbe | nindent 4 }}
  resources:
    {{- toYaml .Values.resources | nindent 4 }}
  securityContext:
    {{- toYaml .Values.containerSecurityContext | nindent 4 }}
  volumeMounts:
    - name: extauthz-config
      mountPath: {{ include "extauthz.configDir" . }}
      readOnly: true
    - name: extauthz-tmp
      mountPath: /tmp
    {{- if .Values.tls.enabled }}
    - name: extauthz-tls
      mountPath: {{ include "extauthz.tlsDir" . }}
      readOnly: true
    {{- end }}
    {{- range .Values.caBundles }}
    - name: {{ printf "extauthz-ca-%s" .name | trunc 63 | trimSuffix "-" }}
      mountPath: {{ printf "%s/%s" (include "extauthz.caDir" $) .name }}
      readOnly: true
    {{- end }}
    {{- with .Values.extraVolumeMounts }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end }}

{{- define "extauthz.sidecarContainer" -}}
{{ include "extauthz.container" . }}
{{- end }}
