{{/* The chart's name, or nameOverride. */}}
{{- define "imgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The operator's object names: fullnameOverride, or RELEASE-operator. */}}
{{- define "imgate.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-operator" .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels that select the operator's pods. */}}
{{- define "imgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "imgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Labels on every object of the chart. */}}
{{- define "imgate.labels" -}}
{{ include "imgate.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: imgate
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The operator's image. */}}
{{- define "imgate.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The operator's settings for every tenant's dataplanes, as `imgate operator` options
(shared by `operator run` and the `operator render` preview in the notes). */}}
{{- define "imgate.settingArgs" -}}
{{- $dp := .Values.dataplane -}}
- {{ printf "--image=%s" (default (include "imgate.image" .) $dp.image) | quote }}
- {{ printf "--tunnel-service-type=%s" $dp.tunnelServiceType | quote }}
- {{ printf "--metrics-namespace=%s" $dp.metricsNamespace | quote }}
{{- with $dp.tunnelDomain }}
- {{ printf "--tunnel-domain=%s" . | quote }}
{{- end }}
{{- with $dp.storageClass }}
- {{ printf "--storage-class=%s" . | quote }}
{{- end }}
{{- range $key, $value := $dp.nodeSelector }}
- {{ printf "--node-selector=%s=%s" $key $value | quote }}
{{- end }}
{{- range $key, $value := $dp.tunnelServiceAnnotations }}
- {{ printf "--tunnel-service-annotation=%s=%s" $key $value | quote }}
{{- end }}
{{- if not $dp.apiServerCIDRs }}
{{- fail "set dataplane.apiServerCIDRs to the ranges holding the API server's endpoints (each address as /32 or /128), which the dataplanes' network policy lets them reach: kubectl get endpointslices -n default -l kubernetes.io/service-name=kubernetes" }}
{{- end }}
{{- range $dp.apiServerCIDRs }}
- {{ printf "--api-server-cidr=%s" . | quote }}
{{- end }}
{{- with .Values.telemetry.otlpEndpoint }}
- {{ printf "--otlp-endpoint=%s" . | quote }}
{{- end }}
{{- end -}}
