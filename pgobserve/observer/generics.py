"""DCRF's ``djangochannelsrestframework.observer.generics``: the instance mixin lives in
``pgobserve.mixins``; it is importable from here too, so migrating is an import change."""

from ..mixins import ObserverModelInstanceMixin

__all__ = ["ObserverModelInstanceMixin"]
