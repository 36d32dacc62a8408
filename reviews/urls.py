from django.urls import path

from .api import ReviewDecisionApi

urlpatterns = [
    path(
        "v1/reviews/<int:item_id>/decision",
        ReviewDecisionApi.as_view(),
        name="review-decision",
    ),
]
