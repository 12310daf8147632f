{{/*
Names, labels and shared fragments, derived in one place.
*/}}

{{/* Chart name, at most 63 characters. */}}
{{- define "trading-platform.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Object-name prefix: <release>-<chart>, or the release name alone when it already contains the
chart name; at most 63 characters (the DNS label limit).
*/}}
{{- define "trading-platform.fullname" -}}
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

{{/* <fullname>-<suffix>, the suffix always kept whole. */}}
{{- define "trading-platform.componentName" -}}
{{- $root := index . 0 }}{{- $suffix := index . 1 }}
{{- printf "%s-%s" (include "trading-platform.fullname" $root | trunc (int (sub 62 (len $suffix))) | trimSuffix "-") $suffix }}
{{- end }}

{{- define "trading-platform.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "trading-platform.labels" -}}
helm.sh/chart: {{ include "trading-platform.chart" . }}
{{ include "trading-platform.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: trading-platform
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{- define "trading-platform.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trading-platform.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Selector of the operator pods. */}}
{{- define "trading-platform.operatorSelectorLabels" -}}
{{ include "trading-platform.selectorLabels" . }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "trading-platform.operatorName" -}}
{{- include "trading-platform.componentName" (list . "operator") }}
{{- end }}

{{- define "trading-platform.serviceAccountName" -}}
{{- default (include "trading-platform.operatorName" .) .Values.operator.serviceAccount.name }}
{{- end }}

{{- define "trading-platform.workerServiceAccountName" -}}
{{- default (include "trading-platform.componentName" (list . "worker")) .Values.workers.serviceAccount.name }}
{{- end }}

{{/* Namespaces where sessions run (default: the release namespace), as a list. */}}
{{- define "trading-platform.sessionNamespaces" -}}
{{- if .Values.sessionNamespaces }}
{{- toJson .Values.sessionNamespaces }}
{{- else }}
{{- toJson (list .Release.Namespace) }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest. Argument: (list $imageValues $root). */}}
{{- define "trading-platform.image" -}}
{{- $img := index . 0 }}{{- $root := index . 1 }}
{{- if $img.digest }}
{{- printf "%s@%s" $img.repository $img.digest }}
{{- else }}
{{- printf "%s:%s" $img.repository (default $root.Chart.AppVersion $img.tag) }}
{{- end }}
{{- end }}

{{/*
The operator's rules on namespaced resources: exactly the calls it makes. Bound cluster-wide
(ClusterRole) or per session namespace (Role), depending on rbac.scope.
*/}}
{{- define "trading-platform.operatorRules" -}}
- apiGroups: [trading.dev]
  resources: [tradingsessions, riskpolicies, backups]
  verbs: [get, list, watch, patch, update]
- apiGroups: [trading.dev]
  resources: [tradingsessions/status, riskpolicies/status, backups/status]
  verbs: [get, patch, update]
- apiGroups: [trading.dev]
  resources: [tradingsessions/finalizers, riskpolicies/finalizers, backups/finalizers]
  verbs: [update]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [batch]
  resources: [jobs, cronjobs]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: ["", events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- if .Values.rotation.enabled }}
# Secret rotation (secretwatch.py): metadata-only list and watch (never get); see values.yaml rotation.
- apiGroups: [""]
  resources: [secrets]
  verbs: [list, watch]
{{- end }}
# Each session's own worker identity (build/rbac.py). RBAC lets the operator grant only rules it holds
# itself, all of which are above; it needs neither escalate nor bind.
- apiGroups: [""]
  resources: [serviceaccounts]
  verbs: [get, create, patch, delete]
- apiGroups: [rbac.authorization.k8s.io]
  resources: [roles, rolebindings]
  verbs: [get, create, patch, delete]
{{- end }}

{{/* The backup pods' rules in a session namespace: read sessions and policies (the resources target), report
into their Backup. Session workers run under their session's own identity (operator: build/rbac.py). */}}
{{- define "trading-platform.workerRules" -}}
- apiGroups: [trading.dev]
  resources: [tradingsessions, riskpolicies]
  verbs: [get, list, watch]
- apiGroups: [trading.dev]
  resources: [backups]
  verbs: [get]
- apiGroups: [trading.dev]
  resources: [backups/status]
  verbs: [get, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end }}
