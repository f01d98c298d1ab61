{{/* The release's name, with the chart's unless it already holds it. */}}
{{- define "neuavatar.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Labels on everything. part-of is what the ServiceMonitor's jobLabel reads: job="neuavatar",
     as in docker-compose's Prometheus, which the alerts and dashboards select on. */}}
{{- define "neuavatar.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
app.kubernetes.io/name: neuavatar
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/part-of: neuavatar
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* One service's pods. Call with (dict "root" $ "name" "tracker"). */}}
{{- define "neuavatar.selectorLabels" -}}
app.kubernetes.io/name: neuavatar
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .name }}
{{- end -}}

{{- define "neuavatar.serviceAccountName" -}}
{{- .Values.serviceAccount.name | default (include "neuavatar.fullname" .) -}}
{{- end -}}

{{/* A service's job queue (neuavatar.messaging: <prefix>.jobs.<stage>). */}}
{{- define "neuavatar.queue" -}}
{{- printf "%s.jobs.%s" .root.Values.config.brokerPrefix .stage -}}
{{- end -}}
