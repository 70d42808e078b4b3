{{/* The chart's name, or nameOverride. */}}
{{- define "connector.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Object names: fullnameOverride, or the release name (with the chart's when it lacks it). */}}
{{- define "connector.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "connector.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "connector.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the connector's pod. */}}
{{- define "connector.selectorLabels" -}}
app.kubernetes.io/name: {{ include "connector.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: connector
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "connector.labels" -}}
{{ include "connector.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: imgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The Secret holding the enrollment token. */}}
{{- define "connector.tokenSecret" -}}
{{- default (printf "%s-enrollment" (include "connector.fullname" .)) .Values.enrollment.existingSecret -}}
{{- end -}}

{{/* The Service ports: the enabled front ends and the forwards. */}}
{{- define "connector.ports" -}}
{{- if .Values.socks.enabled }}
- name: socks
  port: {{ .Values.socks.port }}
{{- end }}
{{- if .Values.httpConnect.enabled }}
- name: http-connect
  port: {{ .Values.httpConnect.port }}
{{- end }}
{{- range .Values.forwards }}
- name: {{ .name }}
  port: {{ .port }}
{{- end }}
{{- end -}}
