{{/*
Helpers of the ferroserve chart. The templates keep to a small part of Helm's
template language (fields, if/else, range, with, include, define, default,
quote, toYaml, nindent, printf, trunc, trimSuffix, contains, upper, add, required,
fail) so that
deploy/validate.py can render them faithfully without Helm.
*/}}

{{/* The chart's name, at most 63 characters (a label value's limit). */}}
{{- define "ferroserve.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's full name: objects are named after it (the release's name
alone when it already contains the chart's). */}}
{{- define "ferroserve.fullname" -}}
{{- $name := include "ferroserve.name" . }}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "ferroserve.selectorLabels" -}}
app.kubernetes.io/name: {{ include "ferroserve.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "ferroserve.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | trunc 63 | trimSuffix "-" }}
{{ include "ferroserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "ferroserve.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "ferroserve.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret the chart makes for the values given as text (tokens, URLs). */}}
{{- define "ferroserve.secretName" -}}
{{- include "ferroserve.fullname" . }}
{{- end }}

{{/* Whether the chart makes that Secret: "true" or "". */}}
{{- define "ferroserve.makesSecret" -}}
{{- if or .Values.auth.tokens .Values.database.url .Values.redis.url }}true{{ end }}
{{- end }}

{{- define "ferroserve.tlsSecretName" -}}
{{- if .Values.tls.existingSecret }}
{{- .Values.tls.existingSecret }}
{{- else }}
{{- printf "%s-tls" (include "ferroserve.fullname" .) }}
{{- end }}
{{- end }}

{{/* "https" when the server serves TLS, else "http". */}}
{{- define "ferroserve.scheme" -}}
{{- if .Values.tls.enabled }}https{{ else }}http{{ end }}
{{- end }}
