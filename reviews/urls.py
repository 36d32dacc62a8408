from django.urls import path

from .api import ReviewDecisionApi

urlpatterns = [
    path(
        # The item's number or its request's id (what completion responses give out).
        "v1/reviews/<str:review_id>/decision",
        ReviewDecisionApi.as_view(),
        name="review-decision",
    ),
]
