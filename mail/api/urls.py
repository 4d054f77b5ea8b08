from django.urls import path

from mail.api import assistant, delegation, messages, outbox, views

urlpatterns = [
    path("connections", views.ConnectionListApi.as_view(), name="api-connections"),
    path("connections/<uuid:connection_id>", views.ConnectionDetailApi.as_view(), name="api-connection-detail"),
    path("connections/<uuid:connection_id>/sync", messages.ConnectionSyncApi.as_view(), name="api-connection-sync"),
    path("outbox", outbox.OutboxListApi.as_view(), name="api-outbox"),
    path("outbox/<uuid:outbox_id>", outbox.OutboxDetailApi.as_view(), name="api-outbox-detail"),
    path("messages", messages.MessageListApi.as_view(), name="api-messages"),
    path("messages/<uuid:message_id>", messages.MessageDetailApi.as_view(), name="api-message-detail"),
    path("messages/<uuid:message_id>/attachments/<int:n>", messages.MessageAttachmentApi.as_view(),
         name="api-message-attachment"),
    path("messages/<uuid:message_id>/archive", messages.MessageArchiveApi.as_view(), name="api-message-archive"),
    path("messages/<uuid:message_id>/labels", messages.MessageLabelsApi.as_view(), name="api-message-labels"),
    path("messages/<uuid:message_id>/read", messages.MessageReadApi.as_view(), name="api-message-read"),
    path("messages/<uuid:message_id>/delegate", delegation.MessageDelegateApi.as_view(), name="api-message-delegate"),
    path("messages/<uuid:message_id>/summary", assistant.MessageSummaryApi.as_view(), name="api-message-summary"),
    path("drafts", assistant.DraftListApi.as_view(), name="api-drafts"),
    path("drafts/<uuid:draft_id>", assistant.DraftDetailApi.as_view(), name="api-draft-detail"),
    path("ai-settings", assistant.AiSettingsApi.as_view(), name="api-ai-settings"),
    path("delegations", delegation.DelegationListApi.as_view(), name="api-delegations"),
    path("delegations/<uuid:delegation_id>", delegation.DelegationDetailApi.as_view(), name="api-delegation-detail"),
    path("shared/messages", delegation.SharedMessageListApi.as_view(), name="api-shared-messages"),
    path("shared/messages/<uuid:message_id>", delegation.SharedMessageDetailApi.as_view(),
         name="api-shared-message-detail"),
]
